package signaling

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// trunkUAs are the dialog UAs towards trunks: plain's Contact is the UDP
// (or TCP) listener; secure's, for trunks over TLS, names the TLS listener
// so that in-dialog requests come back encrypted (nil without one).
type trunkUAs struct{ plain, secure *sipgo.DialogUA }

// newTrunkUAs makes the dialog UAs of client for a relay at host with its
// SIP port and TLS listener (nil for none).
func newTrunkUAs(client *sipgo.Client, host string, sipPort int, tlsAddr net.Addr) trunkUAs {
	u := trunkUAs{plain: &sipgo.DialogUA{
		Client:     client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "mediarelay", Host: host, Port: sipPort}},
	}}
	port := 0
	if tlsAddr != nil {
		_, port = splitHostPort(tlsAddr.String())
	}
	u.secure = &sipgo.DialogUA{
		Client: client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{User: "mediarelay", Host: host, Port: port,
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}},
	}
	return u
}

// forTrunk picks the dialog UA for a trunk's transport.
func (u trunkUAs) forTrunk(t *config.Trunk) *sipgo.DialogUA {
	if mediaplan.SecureSignalling(t) && u.secure != nil {
		return u.secure
	}
	return u.plain
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
