{{- define "spire-server.labels" -}}
app.kubernetes.io/name: spire-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshctl
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "spire-server.selector" -}}
app: spire-server
{{- end -}}
