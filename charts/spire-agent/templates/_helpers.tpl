{{- define "spire-agent.labels" -}}
app.kubernetes.io/name: spire-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshctl
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "spire-agent.selector" -}}
app: spire-agent
{{- end -}}
