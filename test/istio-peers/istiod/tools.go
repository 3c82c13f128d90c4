//go:build tools

// Package tools pins istio.io/istio/pilot/cmd/pilot-discovery (istiod) in go.mod/go.sum;
// scripts/ensure-istiod.sh builds it with `go build istio.io/istio/pilot/cmd/pilot-discovery`.
// The istio.io/istio version must equal the one in ../agent/go.mod (the script checks).
package tools

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
