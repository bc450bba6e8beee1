package signaling

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// ReloadTLS re-reads the SIP and HTTP certificates, keys and the client CA
// bundle. New connections use them; a failure keeps the previous ones and
// is returned (and logged). The command calls it on SIGHUP.
func (r *Relay) ReloadTLS() error {
	if r.tls == nil {
		return errors.New("relay not started")
	}
	if err := r.tls.Load(); err != nil {
		r.log.Error("TLS reload failed; keeping the previous certificates", "err", err)
		return err
	}
	r.log.Info("TLS certificates reloaded")
	return nil
}

// listenSIPTLS opens sip.tls_listen and returns the function that serves it.
func (r *Relay) listenSIPTLS(addr string) (func() error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sip.tls_listen %s: %w", addr, err)
	}
	r.closers = append(r.closers, l.Close)
	r.tlsAddr = l.Addr()
	tl := r.sipStream(tls.NewListener(r.guard(l, "tls", r.cfg.SIP.MaxConns, r.cfg.SIP.MaxConnsPerSource), r.tls.ServerConfig()))
	return func() error { return r.server.ServeTLS(tl) }, nil
}

// newTrunkTLSUA is the dialog UA for trunks reached over TLS: its Contact
// names the TLS listener so that in-dialog requests come back encrypted.
func (r *Relay) newTrunkTLSUA() *sipgo.DialogUA {
	port := 0
	if r.tlsAddr != nil {
		_, port = splitHostPort(r.tlsAddr.String())
	}
	return &sipgo.DialogUA{
		Client: r.client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "mediarelay", Host: r.host, Port: port,
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}},
	}
}

// dialogUAFor picks the dialog UA for a trunk's transport.
func (r *Relay) dialogUAFor(t *config.Trunk) *sipgo.DialogUA {
	if mediaplan.SecureSignalling(t) && r.trunkTLSUA != nil {
		return r.trunkTLSUA
	}
	return r.trunkUA
}

// logTrunkError logs why a trunk could not be reached, saying so plainly
// when its TLS certificate was the reason.
func logTrunkError(log *slog.Logger, t *config.Trunk, err error) {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
	)
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		log.Error("trunk TLS connection refused: certificate expired or not yet valid", "trunk", t.Name, "address", t.Address, "err", err)
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &verify):
		log.Error("trunk TLS connection refused: certificate not trusted", "trunk", t.Name, "address", t.Address, "err", err)
	case errors.As(err, &alert):
		log.Error("trunk TLS connection refused by the trunk", "trunk", t.Name, "address", t.Address, "alert", alert.Error(), "err", err)
	default:
		log.Warn("trunk unreachable", "err", err)
	}
}
