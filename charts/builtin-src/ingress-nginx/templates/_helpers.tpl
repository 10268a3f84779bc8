{{/* The prefix of every object's name: fullnameOverride, or the release's name. */}}
{{- define "ingress-nginx.prefix" -}}
{{- .Values.fullnameOverride | default .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The controller's objects: Deployment/DaemonSet, Service, ConfigMap, RBAC, PDB. */}}
{{- define "ingress-nginx.controller.fullname" -}}
{{- printf "%s-controller" (include "ingress-nginx.prefix" .) -}}
{{- end -}}

{{/* Labels of every object; `component` is the part of the chart the object belongs to. */}}
{{- define "ingress-nginx.labels" -}}
{{ include "ingress-nginx.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ .ctx.Chart.Name }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{- define "ingress-nginx.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "image" <registry/repository/tag/digest> "ctx" $). One registry
for all images: global.imageRegistry when set, else the image's own registry. */}}
{{- define "ingress-nginx.image" -}}
{{- $global := .ctx.Values.global | default dict -}}
{{- $registry := $global.imageRegistry | default .image.registry | trimSuffix "/" -}}
{{- $ref := printf "%s:%s" .image.repository (toString .image.tag) -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" $registry $ref -}}
{{- end -}}
{{- if .image.digest -}}
{{- $ref = printf "%s@%s" $ref .image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* global.imagePullSecrets as a pod's list: [{name: x}] or [x] in values. */}}
{{- define "ingress-nginx.imagePullSecrets" -}}
{{- $global := .Values.global | default dict -}}
{{- range $global.imagePullSecrets }}
- name: {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ .name | quote }}{{ end }}
{{- end }}
{{- end -}}

{{- define "ingress-nginx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "ingress-nginx.controller.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The Lease the replicas elect their leader with: <prefix>-leader, as upstream's <fullname>-leader. */}}
{{- define "ingress-nginx.controller.electionID" -}}
{{- .Values.controller.electionID | default (printf "%s-leader" (include "ingress-nginx.prefix" .)) -}}
{{- end -}}

{{/* The Service whose address the controller writes into Ingress status. */}}
{{- define "ingress-nginx.controller.publishServicePath" -}}
{{- .Values.controller.publishService.pathOverride | default (printf "$(POD_NAMESPACE)/%s" (include "ingress-nginx.controller.fullname" .)) -}}
{{- end -}}

{{/* The controller's command line, as upstream's _params.tpl for what this chart supports. */}}
{{- define "ingress-nginx.controller.args" -}}
- /nginx-ingress-controller
{{- if and .Values.controller.publishService.enabled (or .Values.controller.service.enabled .Values.controller.publishService.pathOverride) }}
- --publish-service={{ include "ingress-nginx.controller.publishServicePath" . }}
{{- end }}
- --election-id={{ include "ingress-nginx.controller.electionID" . }}
- --controller-class={{ .Values.controller.ingressClassResource.controllerValue }}
{{- with .Values.controller.ingressClass }}
- --ingress-class={{ . }}
{{- end }}
- --configmap=$(POD_NAMESPACE)/{{ include "ingress-nginx.controller.fullname" . }}
{{- if .Values.controller.watchIngressWithoutClass }}
- --watch-ingress-without-class=true
{{- end }}
{{- range $key, $value := .Values.controller.extraArgs }}
{{- /* A key without a value (or "") is a bare flag, as upstream. */}}
{{- if eq ($value | quote | len) 2 }}
- --{{ $key }}
{{- else }}
- --{{ $key }}={{ $value }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Values this chart cannot work with, said at install time. */}}
{{- define "ingress-nginx.checks" -}}
{{- if not (has .Values.controller.kind (list "Deployment" "DaemonSet")) -}}
{{- fail (printf "controller.kind %q is not supported: Deployment or DaemonSet" .Values.controller.kind) -}}
{{- end -}}
{{- if .Values.controller.admissionWebhooks.enabled -}}
{{- fail "controller.admissionWebhooks.enabled: this chart has no admission webhooks (see values.yaml); invalid Ingresses are still refused at nginx's reload. Leave it false." -}}
{{- end -}}
{{- if not (has .Values.controller.service.type (list "ClusterIP" "NodePort" "LoadBalancer")) -}}
{{- fail (printf "controller.service.type %q is not supported: ClusterIP, NodePort or LoadBalancer" .Values.controller.service.type) -}}
{{- end -}}
{{- end -}}

{{/* The Deployment's replicas: a rollout's top-level replicaCount, else controller.replicaCount. */}}
{{- define "ingress-nginx.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}{{ int .Values.controller.replicaCount }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end -}}
