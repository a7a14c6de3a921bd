{{- define "lockgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lockgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lockgate.labels" -}}
app.kubernetes.io/name: {{ include "lockgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lockgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lockgate.storeSecret" -}}
{{- if .Values.store.existingSecret -}}
{{- .Values.store.existingSecret -}}
{{- else -}}
{{- include "lockgate.fullname" . }}-store
{{- end -}}
{{- end -}}

{{/* Refuses to render what would start a broker that cannot work or is open in clear. */}}
{{- define "lockgate.validate" -}}
{{- if and (not .Values.store.url) (not .Values.store.existingSecret) -}}
{{- fail "store.url or store.existingSecret is required: cluster mode keeps its metadata and history in PostgreSQL" -}}
{{- end -}}
{{- if not .Values.cluster.backbone -}}
{{- fail "cluster.backbone is required (nats://HOST:4222)" -}}
{{- end -}}
{{- if not .Values.cluster.limiter -}}
{{- fail "cluster.limiter is required (redis://HOST:6379/0)" -}}
{{- end -}}
{{- if and (not .Values.tls.enabled) (not .Values.insecurePlaintext) -}}
{{- fail "tls.enabled is false: set tls.enabled with tls.secretName, or insecurePlaintext=true if something else encrypts the traffic (a service mesh)" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- end -}}
