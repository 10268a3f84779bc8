{{/* The prefix of every object's name: <prefix>-prometheus, <prefix>-grafana, ... */}}
{{- define "monitoring-stack.prefix" -}}
{{- .Values.fullnameOverride | default .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The values key of each component. */}}
{{- define "monitoring-stack.valuesKey" -}}
{{- get (dict "prometheus" "prometheus" "grafana" "grafana" "node-exporter" "nodeExporter" "kube-state-metrics" "kubeStateMetrics") . -}}
{{- end -}}

{{/* Selector labels: (dict "ctx" $ "component" "prometheus"). */}}
{{- define "monitoring-stack.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels: (dict "ctx" $ "component" "prometheus"); the version is the component's image tag. */}}
{{- define "monitoring-stack.labels" -}}
{{- $values := index .ctx.Values (include "monitoring-stack.valuesKey" .component) -}}
{{ include "monitoring-stack.selector" . }}
app.kubernetes.io/version: {{ regexReplaceAll "[^-A-Za-z0-9_.]" (toString $values.image.tag) "_" | trunc 63 | trimAll "-_." | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ .ctx.Chart.Name }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference: (dict "ctx" $ "image" .Values.x.image). global.imageRegistry, when set,
replaces every image's own registry, so that a site pulls everything from its mirror. */}}
{{- define "monitoring-stack.image" -}}
{{- $registry := (.ctx.Values.global).imageRegistry | default .image.registry | trimSuffix "/" -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry .image.repository (toString .image.tag) -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets of every pod, from global.imagePullSecrets (names or {name: ...}). */}}
{{- define "monitoring-stack.imagePullSecrets" -}}
{{- with (.Values.global).imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ .name | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when a component's data goes on a PersistentVolumeClaim:
(dict "ctx" $ "enabled" .Values.x.storage.enabled). null: on in production and multi-cluster
mode, off otherwise; an explicit true or false wins. */}}
{{- define "monitoring-stack.persistent" -}}
{{- if kindIs "invalid" .enabled -}}
{{- if has ((.ctx.Values.global).mode | default "minimal") (list "production" "multi-cluster") }}true{{ end -}}
{{- else if .enabled -}}
true
{{- end -}}
{{- end -}}

{{/* A PersistentVolumeClaim: (dict "ctx" $ "component" "prometheus" "storage" .Values.x.storage). */}}
{{- define "monitoring-stack.pvc" -}}
{{- $class := .storage.storageClass | default (.ctx.Values.global).storageClass -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "monitoring-stack.prefix" .ctx }}-{{ .component }}
  labels: {{- include "monitoring-stack.labels" . | nindent 4 }}
spec:
  accessModes: [ReadWriteOnce]
  {{- with $class }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ .storage.size | quote }}
{{- end -}}

{{/* The scheduling settings of a component's pods: (dict "root" .Values "c" $values): the
component's own, over the chart's top-level nodeSelector and tolerations (what a rollout's node
group sets for the whole stack). */}}
{{- define "monitoring-stack.placement" -}}
{{- $nodeSelector := merge (dict) (.c.nodeSelector | default dict) (.root.nodeSelector | default dict) -}}
{{- $tolerations := concat (.root.tolerations | default list) (.c.tolerations | default list) -}}
{{- with $nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
