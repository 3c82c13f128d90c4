//go:build tools

// Package tools pins k8s.io/kubernetes/cmd/kube-apiserver in go.mod/go.sum;
// ensure-kube-peers.sh builds it with `go build k8s.io/kubernetes/cmd/kube-apiserver`.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
