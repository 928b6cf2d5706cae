{{/* Names, labels and images shared by every template of the soberana chart. */}}

{{- define "soberana.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"<release>-<chart>", or just the release name when it already contains the chart name. Kept to
48 characters so that "<fullname>-operator-secrets" still fits a 63-character name.
*/}}
{{- define "soberana.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "soberana.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "soberana.labels" -}}
helm.sh/chart: {{ include "soberana.chart" . }}
app.kubernetes.io/name: {{ include "soberana.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: soberana
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "operator"). */}}
{{- define "soberana.selectorLabels" -}}
app.kubernetes.io/name: {{ include "soberana.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "soberana.componentLabels" -}}
{{ include "soberana.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "soberana.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "soberana.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "soberana.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (printf "%s-router" (include "soberana.fullname" .)) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The image of one component: include with (dict "root" $ "image" .Values.operator.image). Empty
fields fall back to .Values.image; the tag falls back to the chart's appVersion; a digest wins.
*/}}
{{- define "soberana.image" -}}
{{- $global := .root.Values.image -}}
{{- $repository := default $global.repository .image.repository -}}
{{- $digest := default $global.digest .image.digest -}}
{{- if $digest -}}
{{- printf "%s@%s" $repository $digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default (default .root.Chart.AppVersion $global.tag) .image.tag) -}}
{{- end -}}
{{- end -}}
