{{- define "spire-server.labels" -}}
app.kubernetes.io/name: spire-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshctl
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "spire-server.selector" -}}
app: spire-server
{{- end -}}


{{- /* The token refresher: for each spoke `file|cluster|role`, an EKS token of the role
written atomically into the shared directory; once (ONCE=1, init) or every intervalSeconds.
A spoke whose token cannot be made is reported and retried; the init container fails so the
pod does not start without credentials. */ -}}
{{- define "spire-server.refreshScript" -}}
set -u
refresh() {
  failed=0
  for spec in $SPOKES; do
    file=${spec%%|*}; rest=${spec#*|}; cluster=${rest%%|*}; role=${rest#*|}
    if token=$(aws eks get-token --region "$REGION" --cluster-name "$cluster" --role-arn "$role" --query status.token --output text); then
      printf '%s' "$token" > "$DIR/$file.tmp" && mv "$DIR/$file.tmp" "$DIR/$file" && echo "token for $cluster refreshed"
    else
      echo "token for $cluster (role $role) failed" >&2; failed=1
    fi
  done
  return $failed
}
# The init container writes every token it can get and never fails: a spoke whose access role
# is not assumable yet (its stacks still building, or failed) must not keep the server from
# starting for the others. Until every token is written the loop retries every $RETRY seconds.
if [ "${ONCE:-0}" = 1 ]; then refresh || echo "not every spoke has a token yet; the refresher retries every ${RETRY}s" >&2; exit 0; fi
while true; do if refresh; then sleep "$INTERVAL"; else sleep "$RETRY"; fi; done
{{- end -}}

{{- define "spire-server.refreshEnv" -}}
- name: REGION
  value: {{ .Values.tokenRefresher.region | quote }}
- name: DIR
  value: {{ .Values.tokenRefresher.dir | quote }}
- name: INTERVAL
  value: {{ .Values.tokenRefresher.intervalSeconds | quote }}
- name: RETRY
  value: {{ .Values.tokenRefresher.retrySeconds | quote }}
- name: SPOKES
  value: "{{ range $i, $s := .Values.tokenRefresher.spokes }}{{ if $i }} {{ end }}{{ $s.file }}|{{ $s.cluster }}|{{ $s.roleArn }}{{ end }}"
{{- end -}}
