//go:build tools

// Package tools pins zlint's command in go.mod/go.sum; scripts/ensure-zlint.sh builds it
// with `go build github.com/zmap/zlint/v3/cmd/zlint`.
package tools

import _ "github.com/zmap/zlint/v3/cmd/zlint"
