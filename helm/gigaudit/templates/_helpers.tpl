{{/* Names and labels. */}}
{{- define "gigaudit.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gigaudit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gigaudit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gigaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "gigaudit.selector" (list . "api") */}}
{{- define "gigaudit.selector" -}}
app.kubernetes.io/name: {{ include "gigaudit.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "gigaudit.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gigaudit.storeClaim" -}}
{{- .Values.store.pvc.existingClaim | default (printf "%s-store" (include "gigaudit.fullname" .)) -}}
{{- end -}}

{{- define "gigaudit.storeURL" -}}
{{- if eq .Values.store.type "s3" -}}{{ .Values.store.s3.url }}{{- else -}}file:///var/lib/gigaudit/store{{- end -}}
{{- end -}}

{{/* Environment shared by the API and the workers: Redis, key prefix, store and its credentials. */}}
{{- define "gigaudit.commonEnv" -}}
- name: GIGAUDIT_REDIS_URL
{{- if .Values.redis.bundled.enabled }}
  value: {{ printf "redis://%s-redis:6379/0" (include "gigaudit.fullname" .) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ required "redis.urlSecret.name is required unless redis.bundled.enabled" .Values.redis.urlSecret.name }}
      key: {{ .Values.redis.urlSecret.key }}
{{- end }}
- name: GIGAUDIT_KEY_PREFIX
  value: {{ .Values.keyPrefix | quote }}
- name: GIGAUDIT_STORE
  value: {{ include "gigaudit.storeURL" . | quote }}
- name: HOME
  value: /tmp
{{- if .Values.metrics.enabled }}
- name: GIGAUDIT_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
{{- end }}
- name: GIGAUDIT_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: GIGAUDIT_TRACING
  value: {{ .Values.tracing.exporter | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- name: GIGAUDIT_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.store.type "s3" }}
{{- with .Values.store.s3.endpoint }}
- name: FSSPEC_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.store.s3.credentialsSecret }}
{{- if .name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "gigaudit.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gigaudit.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Pod annotation that rolls the pods when a Secret they read changes: the sha256 of the data of the named
Secrets as the cluster holds them when the release is installed or upgraded (lookup). Without a cluster (helm
template, GitOps renders) lookup finds nothing and the checksum stays constant.
include "gigaudit.secretsChecksum" (list . (list "name-a" "name-b")) */}}
{{- define "gigaudit.secretsChecksum" -}}
{{- $root := index . 0 -}}
{{- $seen := list -}}
{{- range $name := index . 1 -}}
{{- $secret := lookup "v1" "Secret" $root.Release.Namespace $name | default dict -}}
{{- $seen = append $seen (dict "name" $name "data" (get $secret "data" | default dict)) -}}
{{- end -}}
{{- $seen | toJson | sha256sum -}}
{{- end -}}

{{/* Names of the Secrets both the API and the workers read (Redis URL, S3 credentials), as a list. */}}
{{- define "gigaudit.commonSecretNames" -}}
{{- $names := list -}}
{{- if not .Values.redis.bundled.enabled -}}{{- $names = append $names .Values.redis.urlSecret.name -}}{{- end -}}
{{- if and (eq .Values.store.type "s3") .Values.store.s3.credentialsSecret.name -}}
{{- $names = append $names .Values.store.s3.credentialsSecret.name -}}
{{- end -}}
{{- $names | toJson -}}
{{- end -}}
