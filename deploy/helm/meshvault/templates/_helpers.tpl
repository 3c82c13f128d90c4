{{- define "meshvault.labels" -}}
app.kubernetes.io/name: meshvault
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "meshvault.selector" -}}
app.kubernetes.io/name: meshvault
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshvault.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- /* Object names: the release name when it already says meshvault, else <release>-meshvault. */ -}}
{{- define "meshvault.fullname" -}}
{{- if contains "meshvault" .Release.Name }}{{ .Release.Name }}{{ else }}{{ .Release.Name }}-meshvault{{ end }}
{{- end }}

{{- /*
meshvault's config file: .Values.config, plus kubernetes.istiodCertificate from the
top-level istiodCertificate values when enabled (one switch for the feature and its RBAC).
*/ -}}
{{- define "meshvault.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.istiodCertificate.enabled -}}
{{- $kube := default (dict) $config.kubernetes -}}
{{- $_ := set $kube "istiodCertificate" (deepCopy .Values.istiodCertificate) -}}
{{- $_ := set $config "kubernetes" $kube -}}
{{- end -}}
{{- toYaml $config -}}
{{- end }}

{{- /*
"true" when the chart runs the CA server (and its root publisher). With cacerts.enabled a stock
istiod signs from Secret cacerts and writes istio-ca-root-cert itself: a second CA server and a
second root publisher would fight it over those ConfigMaps.
*/ -}}
{{- define "meshvault.caServer" -}}
{{- if .Values.cacerts.enabled -}}
{{- if .Values.istiodCertificate.enabled -}}
{{- fail "istiodCertificate.enabled needs meshvault's CA server, which cacerts.enabled turns off (istiod signs with cacerts): enable one of them" -}}
{{- end -}}
{{- else -}}
true
{{- end -}}
{{- end }}

{{- /* Pod metadata every meshvault pod carries: no sidecar (it is the CA), Prometheus scraping. */ -}}
{{- define "meshvault.podAnnotations" -}}
sidecar.istio.io/inject: "false"
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.service.httpPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
