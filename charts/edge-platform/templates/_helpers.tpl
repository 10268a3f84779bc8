{{/* Names and labels. */}}
{{- define "edge.fullname" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge.labels" -}}
app.kubernetes.io/name: edge-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "edge.selector" -}}
app.kubernetes.io/name: edge-platform
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The API server's values: `apiServer` (the guide's values file) deep-merged with `api-server`
(the guide's --set spelling), the dashed one winning. Use: include "edge.api" . | fromYaml
*/}}
{{- define "edge.api" -}}
{{- $camel := deepCopy (.Values.apiServer | default dict) -}}
{{- $dashed := deepCopy (index .Values "api-server" | default dict) -}}
{{- toYaml (mustMergeOverwrite $camel $dashed) -}}
{{- end -}}

{{- define "edge.production" -}}
{{- if or (eq .Values.global.mode "production") (eq .Values.global.mode "multi-cluster") -}}true{{- end -}}
{{- end -}}

{{- define "edge.image" -}}
{{- $g := .Values.global -}}
{{- if $g.imageRegistry -}}{{ printf "%s/%s:%s" $g.imageRegistry $g.imageRepository $g.imageTag }}{{- else -}}{{ printf "%s:%s" $g.imageRepository $g.imageTag }}{{- end -}}
{{- end -}}

{{- define "edge.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "edge.fullname" .)) -}}
{{- end -}}

{{- define "edge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ .Values.serviceAccount.name | default (include "edge.fullname" .) }}{{- else -}}{{ .Values.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}

{{/* Where PostgreSQL is: the bundled one of this mode, or the external one of the values. */}}
{{- define "edge.databaseHost" -}}
{{- $api := include "edge.api" . | fromYaml -}}
{{- if and .Values.postgresql.enabled (include "edge.production" .) -}}postgres-ha-rw
{{- else if .Values.postgresql.enabled -}}{{ include "edge.fullname" . }}-postgresql
{{- else -}}{{ required "apiServer.database.host is required when postgresql.enabled=false" $api.database.host }}
{{- end -}}
{{- end -}}

{{- define "edge.databaseSslmode" -}}
{{- $api := include "edge.api" . | fromYaml -}}
{{- if .Values.postgresql.enabled -}}{{ if include "edge.production" . }}require{{ else }}disable{{ end }}{{- else -}}{{ $api.database.sslmode }}{{- end -}}
{{- end -}}

{{/* The environment every platform container gets (API server, controller, migrations). */}}
{{- define "edge.env" -}}
{{- $api := include "edge.api" . | fromYaml -}}
- name: EDGE_MODE
  value: {{ .Values.global.mode | quote }}
- name: DATABASE_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "edge.secretName" . }}, key: database-password}}
- name: DATABASE_URL
  value: {{ printf "postgres://%s:$(DATABASE_PASSWORD)@%s:%v/%s?sslmode=%s" $api.database.user (include "edge.databaseHost" .) $api.database.port $api.database.database (include "edge.databaseSslmode" .) | quote }}
{{- if and .Values.redis.enabled (include "edge.production" .) }}
- name: REDIS_ADDRESSES
  value: {{ printf "%s-redis-leader:6379" (include "edge.fullname" .) | quote }}
{{- else if .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "edge.fullname" .) | quote }}
{{- else }}
- name: REDIS_ADDRESSES
  value: {{ required "apiServer.redis.addresses is required when redis.enabled=false" (join "," $api.redis.addresses) | quote }}
{{- end }}
- name: JWT_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "edge.secretName" . }}, key: jwt-secret}}
- name: ENCRYPTION_KEY
  valueFrom: {secretKeyRef: {name: {{ include "edge.secretName" . }}, key: encryption-key}}
- name: ADMIN_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "edge.secretName" . }}, key: admin-password}}
- name: OAUTH_CLIENT_ID
  value: {{ $api.oauth.clientId | quote }}
- name: OAUTH_CLIENT_SECRET
  valueFrom: {secretKeyRef: {name: {{ include "edge.secretName" . }}, key: oauth-client-secret}}
{{- if $api.oauth.issuer }}
- name: OAUTH_ISSUER
  value: {{ $api.oauth.issuer | quote }}
{{- end }}
{{- if $api.publicUrl }}
- name: PUBLIC_URL
  value: {{ $api.publicUrl | quote }}
{{- end }}
- name: BUILTIN_CHARTS
  value: {{ include "edge.builtinCharts" . | quote }}
{{- if .Values.console.publicUrl }}
- name: CONSOLE_PUBLIC_URL
  value: {{ .Values.console.publicUrl | quote }}
{{- end }}
{{- end -}}

{{/* chartMuseum.builtinCharts as BUILTIN_CHARTS: name:version,name:version. */}}
{{- define "edge.builtinCharts" -}}
{{- $charts := list -}}
{{- range .Values.chartMuseum.builtinCharts -}}
{{- $charts = append $charts (printf "%s:%s" .name (toString .version)) -}}
{{- end -}}
{{- join "," $charts -}}
{{- end -}}

{{- define "edge.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "edge.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* "true" when this chart brings Prometheus and Grafana (monitoring.enabled, unless
monitoring.bundled is false: then the cluster's Prometheus operator is used). */}}
{{- define "edge.bundledMonitoring" -}}
{{- if hasKey .Values.monitoring "bundled" }}{{ if .Values.monitoring.bundled }}true{{ end }}
{{- else if .Values.monitoring.enabled }}true{{ end }}
{{- end -}}

{{/* Pod annotations the bundled Prometheus scrapes the metrics port by. */}}
{{- define "edge.scrapeAnnotations" -}}
{{- if include "edge.bundledMonitoring" . }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: "8080"
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "edge.logLabels" -}}
{{- if .Values.logging.enabled }}
logging.theriseunion.io/format: json
{{- end }}
{{- end -}}

{{/*
The generated secrets, computed once per render and shared by every template that needs them:
the values already in the cluster (upgrades keep them) or new random ones.
*/}}
{{- define "edge.generated" -}}
{{- if not (hasKey .Values "_generated") -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "edge.secretName" .)) | default dict -}}
{{- $data := $existing.data | default dict -}}
{{- $values := dict -}}
{{- range $key, $size := dict "jwt-secret" 48 "encryption-key" 48 "admin-password" 24 "oauth-client-secret" 40 "database-password" 32 "console-session-secret" 48 "console-forwarding-secret" 48 -}}
{{- $_ := set $values $key (index $data $key | default (randAlphaNum $size | b64enc)) -}}
{{- end -}}
{{- $_ := set .Values "_generated" $values -}}
{{- end -}}
{{- toYaml .Values._generated -}}
{{- end -}}
