{{/* Names and labels. */}}
{{- define "edge-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edge-agent.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "edge-agent.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret mounted at /etc/edge-agent: the chart's own, or the operator's. */}}
{{- define "edge-agent.secretName" -}}
{{- .Values.existingSecret | default (include "edge-agent.fullname" .) -}}
{{- end -}}

{{/* Values the agent cannot start without, said at install time. */}}
{{- define "edge-agent.checks" -}}
{{- if not .Values.platformUrl -}}
{{- fail "platformUrl is required: the platform's address as this cluster reaches it, e.g. --set platformUrl=https://edge.example.com" -}}
{{- end -}}
{{- if not (regexMatch "^https?://[^/?#@ ]+(/[^?# ]*)?$" .Values.platformUrl) -}}
{{- fail (printf "platformUrl %q is not an http(s) URL without credentials, query or fragment (e.g. https://edge.example.com)" .Values.platformUrl) -}}
{{- end -}}
{{- if and .Values.joinToken .Values.existingSecret -}}
{{- fail "set joinToken or existingSecret, not both" -}}
{{- end -}}
{{- end -}}
