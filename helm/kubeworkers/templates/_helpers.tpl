{{/*
Names. Object names are capped at 63 characters because Service names (and label values)
must be DNS-1123 labels; the suffixes we append ("-redis", "-metrics", "-workers") are why
the base name is cut shorter where a suffix follows.
*/}}
{{- define "kubeworkers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubeworkers.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubeworkers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
*/}}
{{- define "kubeworkers.labels" -}}
helm.sh/chart: {{ include "kubeworkers.chart" . }}
app.kubernetes.io/name: {{ include "kubeworkers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeworkers
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels never change after install: a Deployment's selector is immutable. */}}
{{- define "kubeworkers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeworkers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubeworkers.operator.selectorLabels" -}}
{{ include "kubeworkers.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubeworkers.redis.selectorLabels" -}}
{{ include "kubeworkers.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "kubeworkers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubeworkers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repo:tag" or "repo@digest"; the tag defaults to the chart's appVersion. */}}
{{- define "kubeworkers.image" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace the operator's namespaced rights and worker objects live in. */}}
{{- define "kubeworkers.workNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace }}
{{- end }}

{{/* Redis: which Secret holds the URL (always under key "url"), whoever made it. */}}
{{- define "kubeworkers.redis.fullname" -}}
{{- printf "%s-redis" (include "kubeworkers.fullname" .) }}
{{- end }}

{{- define "kubeworkers.redis.secretName" -}}
{{- default (include "kubeworkers.redis.fullname" .) .Values.redis.existingSecret }}
{{- end }}

{{/*
The namespaces that get a copy of the chart-made Redis Secret: the release namespace, the
watched namespace, and redis.secretNamespaces, without duplicates.
*/}}
{{- define "kubeworkers.redis.secretNamespaces" -}}
{{- $all := list .Release.Namespace }}
{{- with .Values.operator.watchNamespace }}{{ $all = append $all . }}{{ end }}
{{- range .Values.redis.secretNamespaces }}{{ $all = append $all . }}{{ end }}
{{- $all | uniq | toJson }}
{{- end }}

{{/*
The generated Redis password. It must survive `helm upgrade` (a new password would lock the
running Redis out from its clients), so an existing Secret's value is reused via lookup.
lookup returns nothing under `helm template` and --dry-run, which then show a fresh value.
*/}}
{{- define "kubeworkers.redis.password" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "kubeworkers.redis.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* Catch combinations the JSON schema cannot express clearly, before anything is applied. */}}
{{- define "kubeworkers.validate" -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.url) (not .Values.redis.existingSecret) }}
{{- fail "redis.enabled is false: set redis.url or redis.existingSecret to reach your own Redis" }}
{{- end }}
{{- if and .Values.redis.existingSecret .Values.redis.secretNamespaces }}
{{- fail "redis.secretNamespaces copies the chart-made Secret only; with redis.existingSecret, create it in those namespaces yourself" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.url }}
{{- fail "redis.url is for an external Redis: set redis.enabled=false to use it" }}
{{- end }}
{{- end }}

{{/* The Redis probes' command: PONG with the password read from the mounted Secret. */}}
{{- define "kubeworkers.redis.ping" -}}
REDISCLI_AUTH=\"$(cat /run/secrets/redis/password)\" redis-cli ping | grep -q PONG
{{- end }}
