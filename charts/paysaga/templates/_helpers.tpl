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
- name: PAYSAGA_CODEC_KEYS_FILE
  value: /etc/paysaga/codec/keys.json
{{- with include "paysaga.tracingEnv" . }}
{{ trim . }}
{{- end }}
{{- end -}}

{{- /* Where spans go (OTLP/HTTP, and Zipkin's format), when traces are wanted. */ -}}
{{- define "paysaga.tracingEnv" -}}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.zipkinEndpoint }}
- name: OTEL_EXPORTER_ZIPKIN_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- /* The Secret holding the payload codec's keyring (key keys.json). */}}
{{- define "paysaga.codecSecretName" -}}
{{- .Values.codec.existingSecret | default (printf "%s-codec" .Release.Name) -}}
{{- end -}}

{{- /* The keyring, mounted read-only where PAYSAGA_CODEC_KEYS_FILE points
(a file, never an environment variable: it is read at start, never logged). */}}
{{- define "paysaga.codecVolumeMount" -}}
- name: codec-keys
  mountPath: /etc/paysaga/codec
  readOnly: true
{{- end -}}

{{- define "paysaga.codecVolume" -}}
- name: codec-keys
  secret:
    secretName: {{ include "paysaga.codecSecretName" . }}
    defaultMode: 0440
    items:
      - {key: keys.json, path: keys.json}
{{- end -}}

{{/* The namespaces RecurringPayments fire in, comma separated: the release's
and worker.recurringNamespaces. */}}
{{- define "paysaga.recurringNamespaces" -}}
{{- prepend (.Values.worker.recurringNamespaces | default list) .Release.Namespace | uniq | join "," -}}
{{- end }}

{{/* The namespaces whose WebhookEndpoints get their payments' events, comma
separated: the release's and worker.webhooks.namespaces. */}}
{{- define "paysaga.webhookNamespaces" -}}
{{- prepend (.Values.worker.webhooks.namespaces | default list) .Release.Namespace | uniq | join "," -}}
{{- end }}

{{- /* cert-manager issues the ingress' certificate: the issuer's name, or "". */}}
{{- define "paysaga.ingressCertManager" -}}
{{- $cm := .Values.ingress.tls.certManager -}}
{{- if and $cm.issuer $cm.clusterIssuer -}}
{{- fail "ingress.tls.certManager: set issuer or clusterIssuer, not both" -}}
{{- end -}}
{{- or $cm.issuer $cm.clusterIssuer -}}
{{- end -}}

{{- /* The TLS Secret the Ingress serves: given, or made (by the chart or cert-manager). */}}
{{- define "paysaga.ingressTlsSecretName" -}}
{{- .Values.ingress.tls.secretName | default (printf "%s-ingress-tls" .Release.Name) -}}
{{- end -}}

{{/*
Pod annotations a Prometheus with the usual kubernetes_sd relabelling scrapes:
dict "root" . "port" <the pod's metrics port>. Empty when metrics.scrapeAnnotations is off.
*/}}
{{- define "paysaga.scrape" -}}
{{- if .root.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end }}
