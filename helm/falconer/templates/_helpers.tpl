{{/* Labels shared by everything the chart installs. */}}
{{- define "falconer.labels" -}}
app.kubernetes.io/part-of: falconer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator's image reference. */}}
{{- define "falconer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
