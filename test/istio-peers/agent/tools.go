//go:build tools

// Package tools pins istio.io/istio/pilot/cmd/pilot-agent in go.mod/go.sum;
// scripts/ensure-istio-agent.sh builds it with `go build istio.io/istio/pilot/cmd/pilot-agent`.
package tools

import _ "istio.io/istio/pilot/cmd/pilot-agent"
