kn service create ff-scoring-v1 --force \
  --namespace fraud \
  --image ghcr.io/forestflow/runtime:0.1.0 \
  --port http1:8080 \
  --label forestflow.dev/contract=fraud.scoring \
  --label forestflow.dev/version=v1 \
  --label-service networking.knative.dev/visibility=cluster-local \
  --label-revision forestflow.dev/revision=1 \
  --annotation-revision autoscaling.knative.dev/metric=concurrency \
  --annotation-revision autoscaling.knative.dev/target=16 \
  --annotation-revision autoscaling.knative.dev/min-scale=0 \
  --annotation-revision autoscaling.knative.dev/max-scale=4 \
  --annotation-revision autoscaling.knative.dev/initial-scale=1 \
  --annotation-revision autoscaling.knative.dev/window=60s \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=300s \
  --annotation-revision serving.knative.dev/progress-deadline=900s \
  --revision-name ff-scoring-v1-06856ca \
  --env FF_CONTRACT=fraud/scoring \
  --env FF_VARIANT=v1 \
  --env FF_MODEL_NAME=scoring \
  --env FF_MODEL_URI=https://models.example.com/fraud/v1.pt2 \
  --env FF_MODEL_FORMAT=torch_export \
  --env FF_ALLOW_PICKLE=false \
  --env FF_DEVICE=cpu \
  --env FF_PORT=8080 \
  --env FF_MAX_BATCH_SIZE=32 \
  --env FF_BATCH_WINDOW_MS=2.0 \
  --env FF_MAX_QUEUE=256 \
  --env FF_REQUEST_TIMEOUT_MS=30000 \
  --env FF_PAYLOAD_SAMPLE_RATE=0.1 \
  --env FF_PAYLOAD_MAX_LENGTH=100000 \
  --env 'FF_INPUTS=[{"name":"features","datatype":"FP32","shape":[-1,32]}]' \
  --env 'FF_OUTPUTS=[{"name":"score","datatype":"FP32","shape":[-1,1]}]' \
  --request cpu=2,memory=2Gi \
  --limit cpu=2,memory=2Gi \
  --concurrency-limit 32 \
  --timeout 930 \
  --security-context strict \
  --probe-readiness http:::/v2/models/scoring/ready \
  --probe-readiness-opts PeriodSeconds=1,SuccessThreshold=1,FailureThreshold=3,TimeoutSeconds=1

kn service create ff-scoring-v2 --force \
  --namespace fraud \
  --image ghcr.io/forestflow/runtime:0.1.0 \
  --port http1:8080 \
  --label forestflow.dev/contract=fraud.scoring \
  --label forestflow.dev/version=v2 \
  --label-service networking.knative.dev/visibility=cluster-local \
  --label-revision forestflow.dev/revision=1 \
  --annotation-revision autoscaling.knative.dev/metric=concurrency \
  --annotation-revision autoscaling.knative.dev/target=16 \
  --annotation-revision autoscaling.knative.dev/min-scale=0 \
  --annotation-revision autoscaling.knative.dev/max-scale=4 \
  --annotation-revision autoscaling.knative.dev/initial-scale=1 \
  --annotation-revision autoscaling.knative.dev/window=60s \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=300s \
  --annotation-revision serving.knative.dev/progress-deadline=900s \
  --revision-name ff-scoring-v2-b3b1fff \
  --env FF_CONTRACT=fraud/scoring \
  --env FF_VARIANT=v2 \
  --env FF_MODEL_NAME=scoring \
  --env FF_MODEL_URI=https://models.example.com/fraud/v2.pt2 \
  --env FF_MODEL_FORMAT=torch_export \
  --env FF_ALLOW_PICKLE=false \
  --env FF_DEVICE=cpu \
  --env FF_PORT=8080 \
  --env FF_MAX_BATCH_SIZE=32 \
  --env FF_BATCH_WINDOW_MS=2.0 \
  --env FF_MAX_QUEUE=256 \
  --env FF_REQUEST_TIMEOUT_MS=30000 \
  --env FF_PAYLOAD_SAMPLE_RATE=0.1 \
  --env FF_PAYLOAD_MAX_LENGTH=100000 \
  --env 'FF_INPUTS=[{"name":"features","datatype":"FP32","shape":[-1,32]}]' \
  --env 'FF_OUTPUTS=[{"name":"score","datatype":"FP32","shape":[-1,1]}]' \
  --request cpu=2,memory=2Gi \
  --limit cpu=2,memory=2Gi \
  --concurrency-limit 32 \
  --timeout 930 \
  --security-context strict \
  --probe-readiness http:::/v2/models/scoring/ready \
  --probe-readiness-opts PeriodSeconds=1,SuccessThreshold=1,FailureThreshold=3,TimeoutSeconds=1

kn service create ff-scoring-v3 --force \
  --namespace fraud \
  --image ghcr.io/forestflow/runtime:0.1.0 \
  --port http1:8080 \
  --label forestflow.dev/contract=fraud.scoring \
  --label forestflow.dev/version=v3 \
  --label-service networking.knative.dev/visibility=cluster-local \
  --label-revision forestflow.dev/revision=1 \
  --annotation-revision autoscaling.knative.dev/metric=concurrency \
  --annotation-revision autoscaling.knative.dev/target=16 \
  --annotation-revision autoscaling.knative.dev/min-scale=0 \
  --annotation-revision autoscaling.knative.dev/max-scale=4 \
  --annotation-revision autoscaling.knative.dev/initial-scale=1 \
  --annotation-revision autoscaling.knative.dev/window=60s \
  --annotation-revision autoscaling.knative.dev/scale-to-zero-pod-retention-period=300s \
  --annotation-revision serving.knative.dev/progress-deadline=900s \
  --revision-name ff-scoring-v3-b75da5f \
  --env FF_CONTRACT=fraud/scoring \
  --env FF_VARIANT=v3 \
  --env FF_MODEL_NAME=scoring \
  --env FF_MODEL_URI=https://models.example.com/fraud/v3.pt2 \
  --env FF_MODEL_FORMAT=torch_export \
  --env FF_ALLOW_PICKLE=false \
  --env FF_DEVICE=cpu \
  --env FF_PORT=8080 \
  --env FF_MAX_BATCH_SIZE=32 \
  --env FF_BATCH_WINDOW_MS=2.0 \
  --env FF_MAX_QUEUE=256 \
  --env FF_REQUEST_TIMEOUT_MS=30000 \
  --env FF_PAYLOAD_SAMPLE_RATE=0.1 \
  --env FF_PAYLOAD_MAX_LENGTH=1000 \
  --env 'FF_INPUTS=[{"name":"features","datatype":"FP32","shape":[-1,32]}]' \
  --env 'FF_OUTPUTS=[{"name":"score","datatype":"FP32","shape":[-1,1]}]' \
  --request cpu=2,memory=2Gi \
  --limit cpu=2,memory=2Gi \
  --concurrency-limit 32 \
  --timeout 930 \
  --security-context strict \
  --probe-readiness http:::/v2/models/scoring/ready \
  --probe-readiness-opts PeriodSeconds=1,SuccessThreshold=1,FailureThreshold=3,TimeoutSeconds=1

kubectl apply --server-side --field-manager=forestflow --force-conflicts -f - <<'EOF'
apiVersion: serving.knative.dev/v1
kind: Route
metadata:
  name: scoring
  namespace: fraud
  labels:
    forestflow.dev/contract: fraud.scoring
  annotations:
    forestflow.dev/sticky-header: x-customer-id
spec:
  traffic:
  - revisionName: ff-scoring-v1-06856ca
    percent: 90
    tag: v1
  - revisionName: ff-scoring-v2-b3b1fff
    percent: 10
    tag: v2
EOF
