{{/* The prefix of every object's name: fullnameOverride or else the release name. */}}
{{- define "logging-stack.prefix" -}}
{{- .Values.fullnameOverride | default .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of a component's objects: (dict "ctx" $ "component" "loki"|"fluent-bit"). */}}
{{- define "logging-stack.labels" -}}
{{- $ctx := .ctx -}}
{{- $image := ternary $ctx.Values.loki.image $ctx.Values.shipper.image (eq .component "loki") -}}
{{ include "logging-stack.selector" . }}
app.kubernetes.io/version: {{ $image.tag | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: {{ $ctx.Chart.Name }}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version }}
{{- end -}}

{{/* What a component's selectors match: name, instance and component only. */}}
{{- define "logging-stack.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "image" .Values.x.image "global" .Values.global).
global.imageRegistry, when set, replaces every image's own registry (an air-gapped mirror). */}}
{{- define "logging-stack.image" -}}
{{- $registry := (.global).imageRegistry | default .image.registry -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository (toString .image.tag) -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* global.imagePullSecrets on every pod: names or {name: ...} entries. */}}
{{- define "logging-stack.imagePullSecrets" -}}
{{- with (.Values.global).imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ .name | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when Loki keeps its data on a PersistentVolumeClaim: loki.storage.enabled, or
when that is null, global.mode production or multi-cluster. */}}
{{- define "logging-stack.lokiPersistent" -}}
{{- $enabled := .Values.loki.storage.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- if has ((.Values.global).mode | default "minimal") (list "production" "multi-cluster") }}true{{ end -}}
{{- else if $enabled }}true{{ end -}}
{{- end -}}

{{/* storageClassName of a claim: the component's class, else global.storageClass; "" leaves
the field out (the cluster's default class), "-" sets it empty (no class). */}}
{{- define "logging-stack.storageClassName" -}}
{{- $class := .storage.storageClass | default (.global).storageClass | default "" -}}
{{- if eq $class "-" }}
storageClassName: ""
{{- else if $class }}
storageClassName: {{ $class | quote }}
{{- end }}
{{- end -}}

{{/* Loki's retention as Loki reads it (a Prometheus duration: 30d, 720h, 4w; 0: forever). */}}
{{- define "logging-stack.retention" -}}
{{- $retention := .Values.loki.retention | toString | trim -}}
{{- if regexMatch "^0+[hdwys]?$" $retention -}}
0s
{{- else if not (regexMatch "^[0-9]+[hdwy]$" $retention) -}}
{{- fail (printf "loki.retention %q is not a number and one unit h, d, w or y (e.g. 30d, 720h), or 0 to keep logs forever" $retention) -}}
{{- else if and (hasSuffix "h" $retention) (lt (trimSuffix "h" $retention | atoi) 24) -}}
{{- fail (printf "loki.retention %q is shorter than Loki's minimum retention, 24h (or 0 to keep logs forever)" $retention) -}}
{{- else -}}
{{- $retention -}}
{{- end -}}
{{- end -}}

{{/* Where the shipper sends: YAML with url, host, port, tls and uri (the push path). */}}
{{- define "logging-stack.lokiTarget" -}}
{{- $url := .Values.shipper.lokiUrl | default (printf "http://%s-loki:%d" (include "logging-stack.prefix" .) (int .Values.loki.service.port)) -}}
{{- $parsed := urlParse $url -}}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $parsed.host) | default (ternary "443" "80" (eq $parsed.scheme "https")) -}}
url: {{ $url | quote }}
host: {{ $parsed.hostname | quote }}
port: {{ $port }}
tls: {{ eq $parsed.scheme "https" }}
uri: {{ printf "%s/loki/api/v1/push" (trimSuffix "/" $parsed.path) | quote }}
{{- end -}}

{{/* The labels the shipper sets itself on every stream. */}}
{{- define "logging-stack.shipperLabelNames" -}}
{{- list "job" "namespace" "pod" "container" "node" "app" | toJson -}}
{{- end -}}

{{/* The Secret holding the shipper's basic-auth password, when it has one. */}}
{{- define "logging-stack.shipperPasswordSecret" -}}
{{- with .Values.shipper.basicAuth -}}
{{- if .existingSecret -}}
{{- .existingSecret -}}
{{- else if .password -}}
{{- printf "%s-fluent-bit" (include "logging-stack.prefix" $) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Values this chart cannot work with, said at install time. */}}
{{- define "logging-stack.checks" -}}
{{- $mode := (.Values.global).mode | default "minimal" -}}
{{- if not (has $mode (list "minimal" "production" "multi-cluster")) -}}
{{- fail (printf "global.mode %q is not one of minimal, production, multi-cluster" $mode) -}}
{{- end -}}
{{- if .Values.loki.enabled -}}
{{- $_ := include "logging-stack.retention" . -}}
{{- end -}}
{{- if .Values.shipper.enabled -}}
{{- with .Values.shipper.lokiUrl -}}
{{- if not (regexMatch "^https?://[^/?#@ ]+(/[^?# ]*)?$" .) -}}
{{- fail (printf "shipper.lokiUrl %q is not an http(s) URL without credentials, query or fragment (e.g. https://loki.example.com)" .) -}}
{{- end -}}
{{- else -}}
{{- if not .Values.loki.enabled -}}
{{- fail "shipper.lokiUrl is required when loki.enabled is false: the Loki this cluster's logs go to, e.g. --set shipper.lokiUrl=https://loki.example.com" -}}
{{- end -}}
{{- end -}}
{{- $reserved := include "logging-stack.shipperLabelNames" . | fromJsonArray -}}
{{- range $name, $value := .Values.shipper.externalLabels -}}
{{- if not (regexMatch "^[a-zA-Z_][a-zA-Z0-9_]*$" $name) -}}
{{- fail (printf "shipper.externalLabels: %q is not a Loki label name (letters, digits and _, not starting with a digit)" $name) -}}
{{- end -}}
{{- if has $name $reserved -}}
{{- fail (printf "shipper.externalLabels: %q is set by the shipper itself (%s)" $name (join ", " $reserved)) -}}
{{- end -}}
{{- if or (eq (toString $value) "") (contains "," (toString $value)) (hasPrefix "$" (toString $value)) -}}
{{- fail (printf "shipper.externalLabels.%s: %q must be non-empty, without commas, not starting with $" $name (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- with .Values.shipper.basicAuth -}}
{{- if and .username (not .password) (not .existingSecret) -}}
{{- fail "shipper.basicAuth.username needs a password or existingSecret (key password)" -}}
{{- end -}}
{{- if and (or .password .existingSecret) (not .username) -}}
{{- fail "shipper.basicAuth needs a username with its password" -}}
{{- end -}}
{{- if and .password .existingSecret -}}
{{- fail "set shipper.basicAuth.password or existingSecret, not both" -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.shipper.buffer.type (list "filesystem" "memory")) -}}
{{- fail (printf "shipper.buffer.type %q is not filesystem or memory" .Values.shipper.buffer.type) -}}
{{- end -}}
{{- end -}}
{{- end -}}
