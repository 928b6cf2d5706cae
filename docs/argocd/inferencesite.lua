-- Argo CD health check for soberana.io/InferenceSite (Lua 5.1, as Argo CD runs it).
-- Maps the operator's conditions to an Argo CD health status:
--   Progressing  the operator has not yet observed this generation or looked at the site, or the
--                site is unreachable but still within its grace period
--   Degraded     unreachable for longer than the grace period (Ready=False): its deployments
--                are being placed elsewhere
--   Suspended    cordoned: what runs there keeps running, nothing new is placed
--   Healthy      reachable and ready (or the operator runs with --placement-only)
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

local ready = condition("Ready")
local reachable = condition("Reachable")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to look at the site"
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
  return hs
end
if reachable ~= nil and reachable.status == "False" then
  hs.status = "Progressing"
  hs.message = "Unreachable (within the grace period): " .. (reachable.message or "")
  return hs
end
if reachable ~= nil and reachable.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = reachable.message or "not looked at yet"
  return hs
end
if ready.reason == "Cordoned" then
  hs.status = "Suspended"
  hs.message = ready.message or "cordoned"
  return hs
end
hs.status = "Healthy"
hs.message = "GPUs allocated/total: " .. (obj.status.gpuUsage or "?")
return hs
