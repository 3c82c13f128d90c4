// sds-client: an SDS client that is not ours, for meshvault's agent tests. It speaks
// envoy.service.secret.v3 through go-control-plane's generated client and grpc-go, plays
// one scenario against a Unix socket the way Envoy would, checks what it got with Go's
// crypto/x509 and Envoy's own proto validation rules, then opens a fresh connection to
// show the server still serves. It prints one JSON report on stdout; the TypeScript test
// asserts on it (test/agent/sds-go-client.test.ts). Exit status 0 whenever a report was
// printed: findings are data, not failures.
//
//	sds-client -socket PATH -scenario NAME [-node ID] [-detail TEXT] [-timeout 10s] [-wait 30s]
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// The Secret type URL, from the generated descriptor rather than typed in.
var secretTypeURL = "type.googleapis.com/" + string((&tlsv3.Secret{}).ProtoReflect().Descriptor().FullName())

const clusterTypeURL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// Resource is what one Secret in a response held, as Go reads it.
type Resource struct {
	Name       string   `json:"name"`
	AnyType    string   `json:"anyType"`
	Kind       string   `json:"kind"`  // tls_certificate, validation_context or other
	Valid      string   `json:"valid"` // "" or the PGV validation error
	LeafSerial string   `json:"leafSerial,omitempty"`
	LeafURIs   []string `json:"leafURIs,omitempty"`
	ChainLen   int      `json:"chainLen,omitempty"`
	KeyMatches bool     `json:"keyMatches,omitempty"`
	Roots      int      `json:"roots,omitempty"`
	// sha256 of the whole Secret, to compare content between responses.
	Digest string `json:"digest"`

	chain []*x509.Certificate
	roots *x509.CertPool
}

// Response is one DiscoveryResponse.
type Response struct {
	Version   string     `json:"version"`
	Nonce     string     `json:"nonce"`
	TypeURL   string     `json:"typeUrl"`
	Resources []Resource `json:"resources"`
	// Whether default's chain verifies against ROOTCA's roots when both are in this response.
	Verified *bool `json:"verified,omitempty"`
}

// Status is a gRPC status as Go sees it.
type Status struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Report is printed as JSON.
type Report struct {
	Scenario string `json:"scenario"`
	// Error: the scenario could not be played to its end (timeout, transport error...).
	Error     string               `json:"error,omitempty"`
	Responses map[string]*Response `json:"responses,omitempty"`
	// Between: responses that arrived between an ACK/NACK and the anchor response.
	Between  []*Response       `json:"between,omitempty"`
	Statuses map[string]Status `json:"statuses,omitempty"`
	// Verified: default (from one stream) verifies against ROOTCA (from another).
	Verified *bool          `json:"verified,omitempty"`
	Facts    map[string]any `json:"facts,omitempty"`
	// Fresh: a new connection and stream after the scenario.
	Fresh      *Response `json:"fresh,omitempty"`
	FreshError string    `json:"freshError,omitempty"`
}

type stream = grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

type client struct {
	socket  string
	node    *corev3.Node
	timeout time.Duration
}

func (c *client) dial() (*grpc.ClientConn, secretv3.SecretDiscoveryServiceClient, error) {
	conn, err := grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return conn, secretv3.NewSecretDiscoveryServiceClient(conn), nil
}

func (c *client) request(names []string, version, nonce string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          c.node,
		ResourceNames: names,
		TypeUrl:       secretTypeURL,
		ResponseNonce: nonce,
	}
}

type received struct {
	res *discoveryv3.DiscoveryResponse
	err error
}

// watched reads a stream in the background so that a receive can time out.
type watched struct {
	s      stream
	ch     chan received
	cancel context.CancelFunc
}

func (c *client) open(ctx context.Context, sds secretv3.SecretDiscoveryServiceClient) (*watched, error) {
	sctx, cancel := context.WithCancel(ctx)
	s, err := sds.StreamSecrets(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	w := &watched{s: s, ch: make(chan received, 16), cancel: cancel}
	go func() {
		for {
			r, err := s.Recv()
			w.ch <- received{r, err}
			if err != nil {
				close(w.ch)
				return
			}
		}
	}()
	return w, nil
}

func (w *watched) next(timeout time.Duration) (*discoveryv3.DiscoveryResponse, error) {
	select {
	case r, ok := <-w.ch:
		if !ok {
			return nil, errors.New("stream already ended")
		}
		return r.res, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("no response within %v", timeout)
	}
}

func describe(r *discoveryv3.DiscoveryResponse) *Response {
	out := &Response{Version: r.GetVersionInfo(), Nonce: r.GetNonce(), TypeURL: r.GetTypeUrl(), Resources: []Resource{}}
	for _, a := range r.GetResources() {
		res := Resource{AnyType: a.GetTypeUrl()}
		sum := sha256.Sum256(a.GetValue())
		res.Digest = hex.EncodeToString(sum[:])
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			res.Kind = "undecodable: " + err.Error()
			out.Resources = append(out.Resources, res)
			continue
		}
		res.Name = s.GetName()
		if err := s.ValidateAll(); err != nil {
			res.Valid = err.Error()
		}
		switch t := s.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			res.Kind = "tls_certificate"
			chainPEM := t.TlsCertificate.GetCertificateChain().GetInlineBytes()
			keyPEM := t.TlsCertificate.GetPrivateKey().GetInlineBytes()
			res.chain = parseCerts(chainPEM)
			res.ChainLen = len(res.chain)
			if len(res.chain) > 0 {
				res.LeafSerial = res.chain[0].SerialNumber.Text(16)
				for _, u := range res.chain[0].URIs {
					res.LeafURIs = append(res.LeafURIs, u.String())
				}
			}
			_, err := tls.X509KeyPair(chainPEM, keyPEM)
			res.KeyMatches = err == nil
		case *tlsv3.Secret_ValidationContext:
			res.Kind = "validation_context"
			certs := parseCerts(t.ValidationContext.GetTrustedCa().GetInlineBytes())
			res.Roots = len(certs)
			res.roots = x509.NewCertPool()
			for _, c := range certs {
				res.roots.AddCert(c)
			}
		default:
			res.Kind = "other"
		}
		out.Resources = append(out.Resources, res)
	}
	if d, r := find(out, "default"), find(out, "ROOTCA"); d != nil && r != nil {
		ok := verify(d, r)
		out.Verified = &ok
	}
	return out
}

func find(r *Response, name string) *Resource {
	if r == nil {
		return nil
	}
	for i := range r.Resources {
		if r.Resources[i].Name == name {
			return &r.Resources[i]
		}
	}
	return nil
}

func parseCerts(p []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// verify checks default's leaf against ROOTCA's roots, as Envoy's peer would.
func verify(def, root *Resource) bool {
	if len(def.chain) == 0 || root.roots == nil {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range def.chain[1:] {
		inter.AddCert(c)
	}
	_, err := def.chain[0].Verify(x509.VerifyOptions{
		Roots:         root.roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err == nil
}

func statusOf(err error) Status {
	s, _ := status.FromError(err)
	return Status{Code: s.Code().String(), Message: s.Message()}
}

// untilAnchor reads responses until one has all of `want`; the others are returned as between.
// Each of those is ACKed with `want`, as Envoy does: a push that crossed our request makes the
// server see that request's nonce as stale and ignore it.
func (c *client) untilAnchor(w *watched, want []string, timeout time.Duration) (*Response, []*Response, error) {
	var between []*Response
	deadline := time.Now().Add(timeout)
	for {
		r, err := w.next(time.Until(deadline))
		if err != nil {
			return nil, between, err
		}
		d := describe(r)
		all := true
		for _, n := range want {
			if find(d, n) == nil {
				all = false
			}
		}
		if all {
			return d, between, nil
		}
		between = append(between, d)
		if err := w.s.Send(c.request(want, d.Version, d.Nonce)); err != nil {
			return nil, between, err
		}
		if len(between) > 20 {
			return nil, between, errors.New("more than 20 responses before the anchor: a push storm")
		}
	}
}

func (c *client) run(scenario, detail string, wait time.Duration) *Report {
	rep := &Report{
		Scenario:  scenario,
		Responses: map[string]*Response{},
		Statuses:  map[string]Status{},
		Facts:     map[string]any{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, sds, err := c.dial()
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	defer conn.Close()
	if err := c.play(ctx, rep, sds, scenario, detail, wait); err != nil {
		rep.Error = err.Error()
	}
	fresh, err := c.fresh()
	if err != nil {
		rep.FreshError = err.Error()
	}
	rep.Fresh = fresh
	return rep
}

func (c *client) fresh() (*Response, error) {
	conn, sds, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w, r, err := c.subscribe(context.Background(), sds, []string{"default", "ROOTCA"}, "")
	if err != nil {
		return nil, err
	}
	defer w.cancel()
	return describe(r), nil
}

// subscribe opens a stream, sends its first request for `names` (with `version`, as after a
// reconnect) and returns the stream and the first response.
func (c *client) subscribe(ctx context.Context, sds secretv3.SecretDiscoveryServiceClient, names []string, version string) (*watched, *discoveryv3.DiscoveryResponse, error) {
	w, err := c.open(ctx, sds)
	if err != nil {
		return nil, nil, err
	}
	if err := w.s.Send(c.request(names, version, "")); err != nil {
		w.cancel()
		return nil, nil, err
	}
	r, err := w.next(c.timeout)
	if err != nil {
		w.cancel()
		return nil, nil, fmt.Errorf("first response for %v: %w", names, err)
	}
	return w, r, nil
}

// ack sends what Envoy sends after applying r.
func (c *client) ack(w *watched, names []string, r *discoveryv3.DiscoveryResponse) error {
	return w.s.Send(c.request(names, r.GetVersionInfo(), r.GetNonce()))
}

func (c *client) play(ctx context.Context, rep *Report, sds secretv3.SecretDiscoveryServiceClient, scenario, detail string, wait time.Duration) error {
	both := []string{"default", "ROOTCA"}
	switch scenario {
	case "separate":
		// Envoy's usual shape: one stream per resource.
		a, ra, err := c.subscribe(ctx, sds, []string{"default"}, "")
		if err != nil {
			return err
		}
		defer a.cancel()
		b, rb, err := c.subscribe(ctx, sds, []string{"ROOTCA"}, "")
		if err != nil {
			return err
		}
		defer b.cancel()
		rep.Responses["default"], rep.Responses["ROOTCA"] = describe(ra), describe(rb)
		if d, r := find(rep.Responses["default"], "default"), find(rep.Responses["ROOTCA"], "ROOTCA"); d != nil && r != nil {
			ok := verify(d, r)
			rep.Verified = &ok
		}
		_ = c.ack(a, []string{"default"}, ra)
		_ = c.ack(b, []string{"ROOTCA"}, rb)

	case "one-stream":
		w, r, err := c.subscribe(ctx, sds, both, "")
		if err != nil {
			return err
		}
		defer w.cancel()
		rep.Responses["first"] = describe(r)
		_ = c.ack(w, both, r)

	case "ack", "nack":
		// Subscribe to default, ACK or NACK the answer, then add ROOTCA on the same stream: the
		// response to that is the anchor; anything before it answered the ACK/NACK (a server
		// must not) or is a rotation push (new content).
		w, r, err := c.subscribe(ctx, sds, []string{"default"}, "")
		if err != nil {
			return err
		}
		defer w.cancel()
		rep.Responses["first"] = describe(r)
		version := r.GetVersionInfo()
		reply := c.request([]string{"default"}, version, r.GetNonce())
		if scenario == "nack" {
			// Envoy's NACK: the last accepted version (none yet), the rejected nonce, the reason.
			version = ""
			reply.VersionInfo = version
			reply.ErrorDetail = &rpcstatus.Status{Code: int32(codes.Internal), Message: detail}
		}
		if err := w.s.Send(reply); err != nil {
			return err
		}
		if err := w.s.Send(c.request(both, version, r.GetNonce())); err != nil {
			return err
		}
		anchor, between, err := c.untilAnchor(w, both, c.timeout+wait)
		rep.Between = between
		if err != nil {
			return fmt.Errorf("waiting for the response to the new subscription: %w", err)
		}
		rep.Responses["anchor"] = anchor
		_ = w.s.Send(c.request(both, anchor.Version, anchor.Nonce))

	case "unknown":
		// A known and an unknown name on one stream, then an unknown name alone on another
		// stream that later adds ROOTCA (the anchor).
		w, r, err := c.subscribe(ctx, sds, []string{"default", detail}, "")
		if err != nil {
			return err
		}
		defer w.cancel()
		rep.Responses["mixed"] = describe(r)
		_ = c.ack(w, []string{"default", detail}, r)
		u, err := c.open(ctx, sds)
		if err != nil {
			return err
		}
		defer u.cancel()
		if err := u.s.Send(c.request([]string{detail}, "", "")); err != nil {
			return err
		}
		if err := u.s.Send(c.request([]string{detail, "ROOTCA"}, "", "")); err != nil {
			return err
		}
		anchor, between, err := c.untilAnchor(u, []string{"ROOTCA"}, c.timeout)
		rep.Between = between
		if err != nil {
			return fmt.Errorf("waiting for ROOTCA after an unknown name: %w", err)
		}
		rep.Responses["anchor"] = anchor
		f, err := sds.FetchSecrets(ctx, c.request([]string{detail}, "", ""))
		if err != nil {
			rep.Statuses["fetch"] = statusOf(err)
		} else {
			rep.Responses["fetch"] = describe(f)
		}

	case "bad-type":
		w, err := c.open(ctx, sds)
		if err != nil {
			return err
		}
		defer w.cancel()
		req := c.request([]string{"default"}, "", "")
		req.TypeUrl = clusterTypeURL
		if err := w.s.Send(req); err != nil {
			return err
		}
		r, err := w.next(c.timeout)
		if err == nil {
			rep.Responses["unexpected"] = describe(r)
			return errors.New("the server answered a Cluster request")
		}
		rep.Statuses["stream"] = statusOf(err)
		_, err = sds.FetchSecrets(ctx, req)
		rep.Statuses["fetch"] = statusOf(err)

	case "reconnect":
		// Envoy after an agent restart or a broken connection: a new stream on a new connection
		// whose first request carries the version it last accepted (and no nonce).
		w, r, err := c.subscribe(ctx, sds, both, "")
		if err != nil {
			return err
		}
		rep.Responses["first"] = describe(r)
		_ = c.ack(w, both, r)
		_ = w.s.CloseSend()
		w.cancel()
		conn2, sds2, err := c.dial()
		if err != nil {
			return err
		}
		defer conn2.Close()
		w2, r2, err := c.subscribe(ctx, sds2, both, r.GetVersionInfo())
		if err != nil {
			return fmt.Errorf("after reconnecting with version %s: %w", r.GetVersionInfo(), err)
		}
		defer w2.cancel()
		rep.Responses["reconnected"] = describe(r2)

	case "rotation":
		// ACK the first answer and wait for the server to push the next certificate.
		w, r, err := c.subscribe(ctx, sds, both, "")
		if err != nil {
			return err
		}
		defer w.cancel()
		rep.Responses["first"] = describe(r)
		if err := c.ack(w, both, r); err != nil {
			return err
		}
		p, err := w.next(wait)
		if err != nil {
			return fmt.Errorf("waiting for a rotation push: %w", err)
		}
		rep.Responses["pushed"] = describe(p)
		_ = c.ack(w, both, p)

	case "fetch":
		r, err := sds.FetchSecrets(ctx, c.request(both, "", ""))
		if err != nil {
			rep.Statuses["both"] = statusOf(err)
		} else {
			rep.Responses["both"] = describe(r)
		}
		r, err = sds.FetchSecrets(ctx, c.request([]string{"ROOTCA"}, "", ""))
		if err != nil {
			rep.Statuses["rootca"] = statusOf(err)
		} else {
			rep.Responses["rootca"] = describe(r)
		}

	case "leave":
		// Clients that go away before, during and after their push is written, on streams and
		// whole connections.
		n := 0
		for i := 0; i < 10; i++ {
			conn, sdsN, err := c.dial()
			if err != nil {
				return err
			}
			w, err := c.open(ctx, sdsN)
			if err != nil {
				conn.Close()
				return err
			}
			_ = w.s.Send(c.request(both, "", ""))
			switch i % 3 {
			case 0:
				w.cancel()
			case 1:
				conn.Close()
			default:
				_ = w.s.CloseSend()
			}
			w.cancel()
			conn.Close()
			n++
		}
		rep.Facts["left"] = n

	case "delta":
		s, err := sds.DeltaSecrets(ctx)
		if err != nil {
			return err
		}
		_ = s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: c.node, TypeUrl: secretTypeURL, ResourceNamesSubscribe: both})
		_, err = s.Recv()
		rep.Statuses["delta"] = statusOf(err)

	default:
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	return nil
}

func main() {
	socket := flag.String("socket", "", "SDS Unix socket path")
	scenario := flag.String("scenario", "", "separate, one-stream, ack, nack, unknown, bad-type, reconnect, rotation, fetch, leave, delta, fresh")
	node := flag.String("node", "sidecar~127.0.0.1~sds-client.default~default.svc.cluster.local", "Envoy node id")
	detail := flag.String("detail", "sds-client: rejected", "NACK error_detail message, or the unknown resource name")
	timeout := flag.Duration("timeout", 10*time.Second, "wait for an expected response")
	wait := flag.Duration("wait", 30*time.Second, "wait for a rotation push")
	flag.Parse()
	if *socket == "" || *scenario == "" {
		fmt.Fprintln(os.Stderr, "sds-client: -socket and -scenario are required")
		flag.Usage()
		os.Exit(2)
	}
	c := &client{socket: *socket, node: &corev3.Node{Id: *node, Cluster: "sds-client"}, timeout: *timeout}
	var rep *Report
	if *scenario == "fresh" {
		rep = &Report{Scenario: "fresh"}
		f, err := c.fresh()
		rep.Fresh = f
		if err != nil {
			rep.FreshError = err.Error()
		}
	} else {
		rep = c.run(*scenario, *detail, *wait)
	}
	for _, r := range rep.Responses {
		sort.Slice(r.Resources, func(i, j int) bool { return r.Resources[i].Name < r.Resources[j].Name })
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "sds-client:", strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
