package signaling

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/pion/dtls/v3/pkg/crypto/selfsign"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/metrics"
	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// errDTLS is wrapped by every DTLS-SRTP setup failure.
var errDTLS = errors.New("dtls-srtp")

// dtlsOffer is the DTLS-SRTP state of a call's SIP leg.
type dtlsOffer struct {
	cert tls.Certificate
}

// The relay's DTLS certificate for SIP legs: self-signed, made once per
// process; its fingerprint in the SDP is what the peer checks.
var (
	dtlsCertOnce sync.Once
	dtlsCert     tls.Certificate
	dtlsCertErr  error
)

func relayDTLSCert() (tls.Certificate, error) {
	dtlsCertOnce.Do(func() { dtlsCert, dtlsCertErr = selfsign.GenerateSelfSigned() })
	return dtlsCert, dtlsCertErr
}

// dtlsOffer offers UDP/TLS/RTP/SAVP with our fingerprint and setup:actpass
// (RFC 5763): the trunk picks the DTLS role.
func (c *Call) dtlsOffer(o *sdp.Offer) error {
	cert, err := relayDTLSCert()
	if err != nil {
		return fmt.Errorf("%w: certificate: %v", errDTLS, err)
	}
	fp, err := media.Fingerprint(cert, "sha-256")
	if err != nil {
		return fmt.Errorf("%w: %v", errDTLS, err)
	}
	c.sec.dtls = &dtlsOffer{cert: cert}
	o.Proto = "UDP/TLS/RTP/SAVP"
	o.Extra = append(o.Extra, "fingerprint:"+fp, "setup:actpass")
	return nil
}

// dtlsAnswer runs the handshake with the trunk at the address of its answer
// and keys the leg. The trunk's certificate must match its a=fingerprint,
// checked before any media is read.
func (c *Call) dtlsAnswer(ans sdp.Audio) error {
	if c.sec.dtls == nil {
		return fmt.Errorf("%w: no offer", errDTLS)
	}
	var fpHash, fp, setup string
	for _, a := range ans.Attrs {
		switch a.Key {
		case "fingerprint":
			if h, v, err := sdp.ParseFingerprint(a.Value); err == nil && fp == "" {
				fpHash, fp = h, v
			}
		case "setup":
			setup = strings.ToLower(strings.TrimSpace(a.Value))
		}
	}
	if fp == "" {
		return fmt.Errorf("%w: the answer has no usable a=fingerprint", errDTLS)
	}
	if !strings.Contains(strings.ToUpper(ans.Proto), "TLS") {
		return fmt.Errorf("%w: the answer's protocol is %s", errDTLS, ans.Proto)
	}
	if !ans.Addr.IsValid() || ans.Port == 0 {
		return fmt.Errorf("%w: the answer has no media address", errDTLS)
	}
	// The answerer picks: active means it sends the ClientHello; passive
	// means we do. A missing a=setup defaults to active (RFC 4145).
	client := false
	switch setup {
	case "passive":
		client = true
	case "", "active":
	default:
		return fmt.Errorf("%w: a=setup:%s in an answer", errDTLS, setup)
	}
	remote := netip.AddrPortFrom(ans.Addr, uint16(ans.Port))
	cfg, err := c.trunk.RTP().DTLSKeys(context.Background(), media.DTLSOptions{
		Certificate: c.sec.dtls.cert, Client: client, Remote: remote,
		FingerprintHash: fpHash, Fingerprint: fp,
		Timeout: c.r.cfg.SIP.InviteTimeout,
	})
	if err != nil {
		c.r.m.DTLSFailures.WithLabelValues(metrics.LegSIP, media.FailDTLS).Inc()
		return fmt.Errorf("%w: %v", errDTLS, err)
	}
	if err := c.trunk.RTP().StartSRTP(cfg); err != nil {
		c.r.m.DTLSFailures.WithLabelValues(metrics.LegSIP, media.FailSRTPKeys).Inc()
		return fmt.Errorf("%w: %v", errDTLS, err)
	}
	c.sec.suite = cfg.Profile.String()
	c.sec.keyed.Store(true)
	c.log.Info("sip leg encrypted", "srtp", "dtls", "profile", cfg.Profile.String(), "dtls_role", map[bool]string{true: "client", false: "server"}[client])
	return nil
}
