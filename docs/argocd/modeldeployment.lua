-- Argo CD health check for soberana.io/ModelDeployment (Lua 5.1, as Argo CD runs it).
-- Maps the operator's conditions to an Argo CD health status:
--   Progressing  the operator has not yet observed this generation, or replicas are coming up
--   Degraded     no placement meets the hard constraints (Placed=False), or a site failed
--   Healthy      placed, and every replica serves requests
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the soberana operator to observe generation " .. tostring(generation)
  return hs
end

local placed = condition("Placed")
if placed == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for a placement"
  return hs
end
if placed.status == "False" then
  hs.status = "Degraded"
  hs.message = (placed.reason or "Unplaceable") .. ": " .. (placed.message or "")
  return hs
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" and degraded.reason == "SiteFailed" then
  hs.status = "Degraded"
  hs.message = degraded.message or "a site failed"
  return hs
end

local available = condition("Available")
local ready = obj.status.ready or ""
if available ~= nil and available.status == "True"
    and (degraded == nil or degraded.status ~= "True") then
  hs.status = "Healthy"
  hs.message = ready .. " replicas ready on " .. (obj.status.sites or "")
  return hs
end

hs.status = "Progressing"
if degraded ~= nil and degraded.status == "True" then
  hs.message = degraded.message or ("replicas ready: " .. ready)
elseif available ~= nil and available.message ~= nil and available.message ~= "" then
  hs.message = available.message
else
  hs.message = "Waiting for replicas to become ready"
end
return hs
