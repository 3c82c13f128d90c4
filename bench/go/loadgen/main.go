// loadgen drives the CA benchmarks in bench/istiod.ts: one Go load generator for meshvault
// and every baseline, so neither side is measured with a different client. It builds the
// CSRs the way istio-agent does (Istio's util.GenCSR: P-256 or RSA-2048 keys, the SPIFFE ID
// as URI SAN), sends identical requests to two targets interleaved A B B A, verifies every
// response (chain to the given roots, SAN, the CSR's key, signatures) and reports certs/s,
// p50/p99, and the server's CPU per certificate from /proc/<pid>/stat (the pid and its
// descendants, so cluster workers and helper processes count).
//
// Input: a JSON plan on stdin (see bench/istiod.ts). Output: one JSON line per row on stdout.
// Any response that fails verification aborts with exit 1 and says why.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "istio.io/api/security/v1alpha1"
	"istio.io/istio/security/pkg/pki/util"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

type target struct {
	// "grpc": Istio's CreateCertificate over TLS. "vault": POST <url> (Vault/OpenBao pki sign/<role>).
	Kind       string `json:"kind"`
	Addr       string `json:"addr"`
	ServerName string `json:"serverName"`
	URL        string `json:"url"`
	RootsFile  string `json:"rootsFile"`
	Token      string `json:"token"`
	Pids       []int  `json:"pids"`
}

type row struct {
	Label   string `json:"label"`
	Csr     string `json:"csr"` // "p256" or "rsa2048"
	Callers int    `json:"callers"`
	Conns   int    `json:"conns"`
	A       string `json:"a"`
	B       string `json:"b"`
}

type plan struct {
	Seconds       float64           `json:"seconds"`
	WarmupSeconds float64           `json:"warmupSeconds"`
	SpiffeID      string            `json:"spiffeId"`
	CsrCount      int               `json:"csrCount"`
	TTLSeconds    int64             `json:"ttlSeconds"`
	Targets       map[string]target `json:"targets"`
	Rows          []row             `json:"rows"`
}

type result struct {
	Ops              int       `json:"ops"`
	Seconds          float64   `json:"seconds"`
	PerSecond        float64   `json:"perSecond"`
	P50Ms            float64   `json:"p50Ms"`
	P99Ms            float64   `json:"p99Ms"`
	ServerCPUUsPerOp float64   `json:"serverCpuUsPerCert"`
	ClientCPUUsPerOp float64   `json:"clientCpuUsPerCert"`
	RunsPerSecond    []float64 `json:"runsPerSecond"`
	latencies        []time.Duration
	serverTicks      float64
	clientCPU        time.Duration
}

type csrItem struct {
	pem  string
	spki []byte
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(1)
}

// --- CPU accounting -------------------------------------------------------------------

const clockTicks = 100 // USER_HZ on Linux

// treeTicks is utime+stime of pid and all its descendants, in clock ticks.
func treeTicks(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// fields after "pid (comm) ": state=0 ... utime=11 stime=12
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	total := u + st
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		c, _ := os.ReadFile(t)
		for _, p := range strings.Fields(string(c)) {
			if n, err := strconv.Atoi(p); err == nil {
				total += treeTicks(n)
			}
		}
	}
	return total
}

func ticks(pids []int) float64 {
	t := 0.0
	for _, p := range pids {
		t += treeTicks(p)
	}
	return t
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// --- verification ---------------------------------------------------------------------

type verifier struct {
	roots    *x509.CertPool
	rootsDER [][]byte
	spiffeID string
	mu       sync.Mutex
	issuers  map[string]*x509.Certificate // intermediates PEM (verified to the roots) -> issuing CA
	bundleOK map[string]bool
}

func newVerifier(rootsFile, spiffeID string) *verifier {
	b, err := os.ReadFile(rootsFile)
	if err != nil {
		fail("cannot read roots %s: %v", rootsFile, err)
	}
	v := &verifier{roots: x509.NewCertPool(), spiffeID: spiffeID, issuers: map[string]*x509.Certificate{}, bundleOK: map[string]bool{}}
	for _, c := range parsePEMs(string(b)) {
		v.roots.AddCert(c)
		v.rootsDER = append(v.rootsDER, c.Raw)
	}
	if len(v.rootsDER) == 0 {
		fail("no certificates in roots %s", rootsFile)
	}
	return v
}

func parsePEMs(s string) []*x509.Certificate {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			fail("response holds an unparsable certificate: %v", err)
		}
		out = append(out, c)
	}
}

// issuer returns the leaf's issuing CA from the intermediates, verifying them to the roots
// once per distinct set (they only change on rotation).
func (v *verifier) issuer(intermediates string) (*x509.Certificate, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c, ok := v.issuers[intermediates]; ok {
		return c, nil
	}
	certs := parsePEMs(intermediates)
	if len(certs) == 0 {
		return nil, fmt.Errorf("no intermediate in the response")
	}
	pool := x509.NewCertPool()
	for _, c := range certs[1:] {
		pool.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("issuing CA does not chain to the roots: %v", err)
	}
	v.issuers[intermediates] = certs[0]
	return certs[0], nil
}

func (v *verifier) rootBundle(bundle string) error {
	v.mu.Lock()
	ok, seen := v.bundleOK[bundle]
	v.mu.Unlock()
	if seen {
		if !ok {
			return fmt.Errorf("root bundle in the response differs from the expected roots")
		}
		return nil
	}
	got := parsePEMs(bundle)
	ok = len(got) == len(v.rootsDER)
	for i := 0; ok && i < len(got); i++ {
		ok = bytes.Equal(got[i].Raw, v.rootsDER[i])
	}
	v.mu.Lock()
	v.bundleOK[bundle] = ok
	v.mu.Unlock()
	if !ok {
		return fmt.Errorf("root bundle in the response differs from the expected roots")
	}
	return nil
}

// check verifies one issued leaf against what was asked: signature by a CA chaining to the
// roots, exactly the SPIFFE ID as URI SAN, the CSR's public key, and valid now.
func (v *verifier) check(leafPEM, intermediates string, csr csrItem) error {
	leaves := parsePEMs(leafPEM)
	if len(leaves) != 1 {
		return fmt.Errorf("expected one leaf certificate, got %d", len(leaves))
	}
	leaf := leaves[0]
	iss, err := v.issuer(intermediates)
	if err != nil {
		return err
	}
	if err := leaf.CheckSignatureFrom(iss); err != nil {
		return fmt.Errorf("leaf signature does not verify with the issuing CA: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != v.spiffeID {
		return fmt.Errorf("leaf URI SANs %v, expected [%s]", leaf.URIs, v.spiffeID)
	}
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, csr.spki) {
		return fmt.Errorf("leaf public key is not the CSR's")
	}
	if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("leaf is not valid now (%s .. %s)", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.IsCA {
		return fmt.Errorf("leaf is a CA certificate")
	}
	return nil
}

// --- clients --------------------------------------------------------------------------

type caller func(ctx context.Context, csr csrItem) error

func grpcCaller(t target, conns int, v *verifier, ttl int64) (caller, func()) {
	b, err := os.ReadFile(t.RootsFile)
	if err != nil {
		fail("cannot read roots %s: %v", t.RootsFile, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	sn := t.ServerName
	if sn == "" {
		sn = "localhost"
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: sn, MinVersion: tls.VersionTLS12})
	clients := make([]pb.IstioCertificateServiceClient, conns)
	closers := make([]*grpc.ClientConn, conns)
	for i := range clients {
		cc, err := grpc.NewClient(t.Addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			fail("cannot dial %s: %v", t.Addr, err)
		}
		cc.Connect()
		closers[i] = cc
		clients[i] = pb.NewIstioCertificateServiceClient(cc)
	}
	md := metadata.Pairs("authorization", "Bearer "+t.Token)
	var n atomic.Uint64
	call := func(ctx context.Context, csr csrItem) error {
		c := clients[n.Add(1)%uint64(len(clients))]
		resp, err := c.CreateCertificate(metadata.NewOutgoingContext(ctx, md), &pb.IstioCertificateRequest{Csr: csr.pem, ValidityDuration: ttl})
		if err != nil {
			return err
		}
		ch := resp.GetCertChain()
		if len(ch) < 3 {
			return fmt.Errorf("cert chain has %d elements, expected leaf, intermediate(s), roots", len(ch))
		}
		if err := v.rootBundle(ch[len(ch)-1]); err != nil {
			return err
		}
		return v.check(ch[0], strings.Join(ch[1:len(ch)-1], ""), csr)
	}
	return call, func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}
}

func vaultCaller(t target, callers int, v *verifier, ttl int64) (caller, func()) {
	tr := &http.Transport{MaxIdleConns: callers * 2, MaxIdleConnsPerHost: callers * 2, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	call := func(ctx context.Context, csr csrItem) error {
		body, _ := json.Marshal(map[string]any{
			"csr": csr.pem, "uri_sans": v.spiffeID, "ttl": fmt.Sprintf("%ds", ttl),
			"exclude_cn_from_sans": true, "format": "pem",
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
		req.Header.Set("X-Vault-Token", t.Token)
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil {
			return err
		}
		if res.StatusCode != 200 {
			return fmt.Errorf("sign answered %d: %.200s", res.StatusCode, raw)
		}
		var out struct {
			Data struct {
				Certificate string   `json:"certificate"`
				IssuingCA   string   `json:"issuing_ca"`
				CAChain     []string `json:"ca_chain"`
			} `json:"data"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("sign answered unparsable JSON: %v", err)
		}
		chain := out.Data.CAChain
		if len(chain) == 0 {
			chain = []string{out.Data.IssuingCA}
		}
		return v.check(out.Data.Certificate, strings.Join(chain, "\n"), csr)
	}
	return call, tr.CloseIdleConnections
}

// --- measurement ----------------------------------------------------------------------

func run(call caller, csrs []csrItem, callers int, d time.Duration, pids []int, record bool) (*result, error) {
	var wg sync.WaitGroup
	lats := make([][]time.Duration, callers)
	errs := make(chan error, callers)
	t0ticks, c0 := ticks(pids), selfCPU()
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k := i * 7
			for time.Now().Before(end) {
				t := time.Now()
				if err := call(context.Background(), csrs[k%len(csrs)]); err != nil {
					errs <- err
					return
				}
				if record {
					lats[i] = append(lats[i], time.Since(t))
				}
				k++
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start)
	r := &result{Seconds: el.Seconds(), serverTicks: ticks(pids) - t0ticks, clientCPU: selfCPU() - c0}
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	for _, l := range lats {
		r.latencies = append(r.latencies, l...)
	}
	r.Ops = len(r.latencies)
	return r, nil
}

func merge(rs ...*result) result {
	var m result
	for _, r := range rs {
		m.Ops += r.Ops
		m.Seconds += r.Seconds
		m.serverTicks += r.serverTicks
		m.clientCPU += r.clientCPU
		m.latencies = append(m.latencies, r.latencies...)
		m.RunsPerSecond = append(m.RunsPerSecond, float64(r.Ops)/r.Seconds)
	}
	m.PerSecond = float64(m.Ops) / m.Seconds
	sort.Slice(m.latencies, func(i, j int) bool { return m.latencies[i] < m.latencies[j] })
	pct := func(p float64) float64 {
		if len(m.latencies) == 0 {
			return math.NaN()
		}
		return float64(m.latencies[min(len(m.latencies)-1, int(p*float64(len(m.latencies))))].Microseconds()) / 1000
	}
	m.P50Ms, m.P99Ms = pct(0.50), pct(0.99)
	ops := math.Max(1, float64(m.Ops))
	m.ServerCPUUsPerOp = m.serverTicks * (1e6 / clockTicks) / ops
	m.ClientCPUUsPerOp = float64(m.clientCPU.Microseconds()) / ops
	return m
}

func genCSRs(kind string, n int, id string) []csrItem {
	opts := util.CertOptions{Host: id}
	switch kind {
	case "p256":
		opts.ECSigAlg, opts.ECCCurve = util.EcdsaSigAlg, util.P256Curve
	case "rsa2048":
		opts.RSAKeySize = 2048
	default:
		fail("unknown CSR kind %q (p256, rsa2048)", kind)
	}
	out := make([]csrItem, n)
	for i := range out {
		csrPEM, _, err := util.GenCSR(opts)
		if err != nil {
			fail("cannot build a CSR: %v", err)
		}
		csr, err := util.ParsePemEncodedCSR(csrPEM)
		if err != nil {
			fail("cannot parse our own CSR: %v", err)
		}
		out[i] = csrItem{pem: string(csrPEM), spki: csr.RawSubjectPublicKeyInfo}
	}
	return out
}

func loadavg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return math.NaN()
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func main() {
	var p plan
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		fail("cannot read the JSON plan on stdin: %v", err)
	}
	if p.CsrCount <= 0 {
		p.CsrCount = 16
	}
	if p.TTLSeconds <= 0 {
		p.TTLSeconds = 3600
	}
	csrs := map[string][]csrItem{}
	verifiers := map[string]*verifier{}
	for name, t := range p.Targets {
		verifiers[name] = newVerifier(t.RootsFile, p.SpiffeID)
	}
	d := time.Duration(p.Seconds * float64(time.Second))
	w := time.Duration(p.WarmupSeconds * float64(time.Second))
	out := json.NewEncoder(os.Stdout)
	for _, r := range p.Rows {
		if csrs[r.Csr] == nil {
			csrs[r.Csr] = genCSRs(r.Csr, p.CsrCount, p.SpiffeID)
		}
		load := loadavg()
		calls := map[string]caller{}
		for _, name := range []string{r.A, r.B} {
			t, ok := p.Targets[name]
			if !ok {
				fail("row %q names unknown target %q", r.Label, name)
			}
			var c caller
			var done func()
			switch t.Kind {
			case "grpc":
				c, done = grpcCaller(t, max(1, r.Conns), verifiers[name], p.TTLSeconds)
			case "vault":
				c, done = vaultCaller(t, r.Callers, verifiers[name], p.TTLSeconds)
			default:
				fail("target %q: unknown kind %q (grpc, vault)", name, t.Kind)
			}
			defer done()
			calls[name] = c
		}
		got := map[string][]*result{}
		for i, name := range []string{r.A, r.B, r.B, r.A} {
			t := p.Targets[name]
			if i < 2 && w > 0 {
				if _, err := run(calls[name], csrs[r.Csr], r.Callers, w, t.Pids, false); err != nil {
					fail("%s (%s): %v", name, r.Label, err)
				}
			}
			res, err := run(calls[name], csrs[r.Csr], r.Callers, d, t.Pids, true)
			if err != nil {
				fail("%s (%s): %v", name, r.Label, err)
			}
			got[name] = append(got[name], res)
		}
		a, b := merge(got[r.A]...), merge(got[r.B]...)
		_ = out.Encode(map[string]any{
			"label": r.Label, "csr": r.Csr, "callers": r.Callers, "conns": r.Conns,
			"loadavg": load, "a": r.A, "b": r.B, "results": map[string]result{r.A: a, r.B: b},
		})
	}
}
