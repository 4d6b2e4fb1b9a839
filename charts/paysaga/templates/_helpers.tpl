{{- define "paysaga.labels" -}}
app.kubernetes.io/name: paysaga
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "paysaga.selector" -}}
app.kubernetes.io/name: paysaga
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "paysaga.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "paysaga.callbackSecretName" -}}
{{- if .Values.callbackSecret.existingSecret -}}{{ .Values.callbackSecret.existingSecret }}{{- else -}}{{ .Release.Name }}-callback{{- end -}}
{{- end -}}

{{- define "paysaga.temporalAddress" -}}
{{- if eq .Values.temporal.mode "dev" -}}http://{{ .Release.Name }}-temporal:7233{{- else -}}{{ required "temporal.address is required when temporal.mode is external" .Values.temporal.address }}{{- end -}}
{{- end -}}

{{- define "paysaga.dbSecretName" -}}
{{- if eq .Values.postgresql.mode "internal" -}}{{ .Release.Name }}-db{{- else -}}{{ required "postgresql.external.secretName is required when postgresql.mode is external" .Values.postgresql.external.secretName }}{{- end -}}
{{- end -}}

{{- define "paysaga.dbSecretKey" -}}
{{- if eq .Values.postgresql.mode "internal" -}}dsn{{- else -}}{{ .Values.postgresql.external.secretKey }}{{- end -}}
{{- end -}}

{{/* Restricted pod security: non-root, no privilege escalation, no capabilities, read-only root, RuntimeDefault seccomp. */}}
{{- define "paysaga.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "paysaga.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "paysaga.temporalEnv" -}}
- name: PAYSAGA_TEMPORAL_ADDRESS
  value: {{ include "paysaga.temporalAddress" . | quote }}
- name: PAYSAGA_TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: PAYSAGA_LOG_FORMAT
  value: json
{{- end -}}

{{/* The namespaces RecurringPayments fire in, comma separated: the release's
and worker.recurringNamespaces. */}}
{{- define "paysaga.recurringNamespaces" -}}
{{- prepend (.Values.worker.recurringNamespaces | default list) .Release.Namespace | uniq | join "," -}}
{{- end }}
