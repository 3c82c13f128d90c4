// istiod-ca is the baseline bench/istiod.ts measures meshvault against: istiod's own CA
// path, not a re-implementation. Istio's CreateCertificate server (security/pkg/server/ca)
// over Istio's CA (security/pkg/pki/ca: ParsePemEncodedCSR, CheckSignature,
// util.GenCertFromCSR) loaded from an Istio plug-in CA directory (the same files meshvault
// signs with), and Istio's JWT authenticator (go-oidc on go-jose) for the bearer token,
// reading a JWKS this process serves on a loopback HTTP port.
//
// Prints "READY <grpc port>" on stdout once serving; exits on SIGTERM/SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/api/security/v1beta1"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/pki/ca"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// fixedMesh is a mesh.Watcher whose configuration never changes (istiod's default mesh config).
type fixedMesh struct{ cfg *meshconfig.MeshConfig }

func (f fixedMesh) Mesh() *meshconfig.MeshConfig { return f.cfg }
func (f fixedMesh) AddMeshHandler(func()) *mesh.WatcherHandlerRegistration {
	return mesh.NewWatcherHandlerRegistration(func() {})
}
func (f fixedMesh) DeleteMeshHandler(*mesh.WatcherHandlerRegistration) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "istiod-ca: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	dir := flag.String("ca-dir", "", "Istio plug-in CA directory: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem")
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address")
	issuer := flag.String("issuer", "", "JWT issuer the bearer tokens carry")
	jwksFile := flag.String("jwks-file", "", "JWKS (JSON) with the token signing keys")
	audience := flag.String("audience", "istio-ca", "accepted token audience")
	flag.Parse()
	if *dir == "" || *issuer == "" || *jwksFile == "" {
		fail("-ca-dir, -issuer and -jwks-file are required")
	}
	jwks, err := os.ReadFile(*jwksFile)
	if err != nil {
		fail("cannot read the JWKS: %v", err)
	}

	// The JWKS over loopback HTTP: Istio's authenticator fetches keys from a URL (and caches them).
	jl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("cannot listen for the JWKS: %v", err)
	}
	go func() {
		_ = http.Serve(jl, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(jwks)
		}))
	}()

	opts, err := ca.NewPluggedCertIstioCAOptions(ca.SigningCAFileBundle{
		RootCertFile:    filepath.Join(*dir, "root-cert.pem"),
		CertChainFiles:  []string{filepath.Join(*dir, "cert-chain.pem")},
		SigningCertFile: filepath.Join(*dir, "ca-cert.pem"),
		SigningKeyFile:  filepath.Join(*dir, "ca-key.pem"),
	}, 24*time.Hour, 90*24*time.Hour, 2048)
	if err != nil {
		fail("cannot load the plug-in CA from %s: %v", *dir, err)
	}
	istioCA, err := ca.NewIstioCA(opts)
	if err != nil {
		fail("cannot create the CA: %v", err)
	}

	jwt, err := authenticate.NewJwtAuthenticator(&v1beta1.JWTRule{
		Issuer:    *issuer,
		JwksUri:   "http://" + jl.Addr().String() + "/jwks",
		Audiences: []string{*audience},
	}, fixedMesh{mesh.DefaultMeshConfig()})
	if err != nil {
		fail("cannot create the JWT authenticator: %v", err)
	}
	srv, err := caserver.New(istioCA, 24*time.Hour, []security.Authenticator{jwt}, nil)
	if err != nil {
		fail("cannot create the CA server: %v", err)
	}

	// istiod's serving certificate comes from its own CA, as here.
	certPEM, keyPEM, err := istioCA.GenKeyCert([]string{"localhost"}, 24*time.Hour, false)
	if err != nil {
		fail("cannot issue the serving certificate: %v", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		fail("serving certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(istioCA.GetCAKeyCertBundle().GetRootCertPem())
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS12,
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	srv.Register(gs)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("cannot listen on %s: %v", *listen, err)
	}
	fmt.Printf("READY %d\n", l.Addr().(*net.TCPAddr).Port)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	if err := gs.Serve(l); err != nil {
		fail("serve: %v", err)
	}
}
