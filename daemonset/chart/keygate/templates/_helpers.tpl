{{/* The namespace every namespaced object goes to (namespace.name, not the release's). */}}
{{- define "keygate.namespace" -}}
{{- .Values.namespace.name -}}
{{- end -}}

{{/* The label every keygate object carries, as in the kustomize base; no Helm labels, so the
chart and the base render the same objects. */}}
{{- define "keygate.labels" -}}
app.kubernetes.io/part-of: keygate
{{- end -}}

{{- define "keygate.selectorLabels" -}}
app.kubernetes.io/name: keygate
{{- end -}}

{{- define "keygate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount subject of every binding. */}}
{{- define "keygate.subject" -}}
- kind: ServiceAccount
  name: {{ .Values.serviceAccount.name }}
  namespace: {{ include "keygate.namespace" . }}
{{- end -}}

{{/* Whether the CSIDriver asks for the tokens in NodePublish secrets: explicit, or like the
driver's chart (Kubernetes 1.35+). */}}
{{- define "keygate.tokenInSecrets" -}}
{{- $explicit := .Values.csiDriver.serviceAccountTokenInSecrets -}}
{{- if kindIs "invalid" $explicit -}}
{{- semverCompare ">=1.35.0-0" .Capabilities.KubeVersion.Version -}}
{{- else -}}
{{- $explicit -}}
{{- end -}}
{{- end -}}

{{/* Values that contradict each other or the chart's own settings: fail with what to set. */}}
{{- define "keygate.validate" -}}
{{- if and (not .Values.issuer) (not .Values.tokenReview.enabled) -}}
{{- fail "issuer is empty: set it to the cluster's service-account issuer (kubectl get --raw /.well-known/openid-configuration | jq -r .issuer), or set tokenReview.enabled=true" -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.gracePeriod) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than gracePeriod (%v), or in-flight mounts are killed" .Values.terminationGracePeriodSeconds .Values.gracePeriod) -}}
{{- end -}}
{{- $own := dict "socket" "providersDir" "sealed_key" "nodeKey" "metrics_addr" "metrics.enabled and metrics.port" "grace_period" "gracePeriod" "issuer" "issuer" "token_audience" "tokenAudience" "node_name" "(the downward API)" "audit_sink" "auditSink" "log_format" "logFormat" "log_level" "logLevel" "release_policy" "releasePolicy" "token_review" "tokenReview.enabled" "pod_watch" "podWatch.enabled" -}}
{{- range .Values.extraArgs -}}
{{- $key := regexReplaceAll "=.*" . "" | trimPrefix "--" | replace "-" "_" -}}
{{- if hasKey $own $key -}}
{{- fail (printf "extraArgs: %s is set by the chart; use the value %s instead" (regexReplaceAll "=.*" . "") (get $own $key)) -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- $key := .name | trimPrefix "KEYGATE_" | lower -}}
{{- if or (eq .name "PYTHONDONTWRITEBYTECODE") (and (hasPrefix "KEYGATE_" .name) (hasKey $own $key)) -}}
{{- fail (printf "extraEnv: %s is set by the chart; use the value %s instead" .name (get $own $key | default "(the chart keeps it)")) -}}
{{- end -}}
{{- end -}}
{{- $audiences := list .Values.tokenAudience -}}
{{- if .Values.csiDriver.awsAudiences -}}
{{- $audiences = concat $audiences (list "sts.amazonaws.com" "pods.eks.amazonaws.com") -}}
{{- end -}}
{{- range .Values.csiDriver.extraTokenRequests -}}
{{- if has .audience $audiences -}}
{{- fail (printf "csiDriver.extraTokenRequests: audience %q is already requested (tokenAudience or csiDriver.awsAudiences); the API server refuses a CSIDriver that lists an audience twice" .audience) -}}
{{- end -}}
{{- $audiences = append $audiences .audience -}}
{{- end -}}
{{- end -}}

{{/* The audiences the rendered CSIDriver requests, in order. */}}
{{- define "keygate.audiences" -}}
{{- $audiences := list .Values.tokenAudience -}}
{{- if .Values.csiDriver.awsAudiences -}}
{{- $audiences = concat $audiences (list "sts.amazonaws.com" "pods.eks.amazonaws.com") -}}
{{- end -}}
{{- range .Values.csiDriver.extraTokenRequests -}}
{{- $audiences = append $audiences .audience -}}
{{- end -}}
{{- join ", " $audiences -}}
{{- end -}}
