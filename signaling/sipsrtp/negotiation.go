package sipsrtp

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mediarelay/mediarelay/media"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/pkg/sdp"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

// Options are what a Negotiation reports to and how long it waits.
type Options struct {
	// Log gets what was agreed (never the keys).
	Log *slog.Logger
	// DTLSTimeout bounds a DTLS-SRTP handshake; 0 means media's default.
	DTLSTimeout time.Duration
	// OnDTLSFailure, if set, is told why a handshake or its keys failed
	// (media.FailDTLS or media.FailSRTPKeys).
	OnDTLSFailure func(cause string)
	// State, if set, is kept up to date with what the negotiation
	// settles: the policy at the offer, the suite and keys at the answer.
	State *State
}

// Negotiation is the SRTP set-up of one SIP leg towards a trunk, from the
// relay's offer (or the trunk's) to the keys on the leg's RTP.
type Negotiation struct {
	route *config.Trunk
	opts  Options

	policy  string
	offered []sdp.Crypto     // our a=crypto lines, keys included (never logged)
	cert    *tls.Certificate // offered for policy dtls
	suite   string           // what was agreed; "" for plain RTP
	keyed   bool
}

// New is a negotiation with the trunk route, not yet started: until Offer
// or Inbound it expects plain RTP.
func New(route *config.Trunk, o Options) *Negotiation {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Negotiation{route: route, opts: o}
}

// Outcome is what the negotiation has settled so far.
func (n *Negotiation) Outcome() Outcome {
	return Outcome{Policy: n.policy, Suite: n.suite, Keyed: n.keyed}
}

// settle records the outcome in the State the options name.
func (n *Negotiation) settle() {
	if n.opts.State != nil {
		n.opts.State.Set(n.Outcome())
	}
}

// Offer fills in the offer's protocol and crypto for the trunk's policy:
// SDES with fresh keys from crypto/rand, or DTLS-SRTP with the relay's
// fingerprint. It returns mediaplan.ErrSDESInsecure when the policy asks
// for SDES over a transport that would expose the keys.
func (n *Negotiation) Offer(o *sdp.Offer) error {
	n.policy = n.route.SRTP
	n.settle()
	switch n.policy {
	case mediaplan.SRTPOff:
		return nil
	case mediaplan.SRTPOptional, mediaplan.SRTPRequired:
		if !mediaplan.SDESAllowed(n.route) {
			return mediaplan.ErrSDESInsecure
		}
		offered, err := mediaplan.SDESOffer()
		if err != nil {
			return fmt.Errorf("sdes offer: %w", err)
		}
		for _, cr := range offered {
			o.Crypto = append(o.Crypto, cr.String())
		}
		n.offered = append(n.offered, offered...)
		if n.policy == mediaplan.SRTPRequired {
			o.Proto = "RTP/SAVP"
		}
		return nil
	case mediaplan.SRTPDTLS:
		return n.dtlsOffer(o)
	}
	return fmt.Errorf("unknown srtp policy %q", n.policy)
}

// KeepSuites narrows an SDES offer made by Offer to the suites allow
// takes, in o and in what the answer may pick. It is an error when none
// is left and the policy requires SRTP.
func (n *Negotiation) KeepSuites(o *sdp.Offer, allow func(suite string) bool) error {
	keep := n.offered[:0]
	o.Crypto = o.Crypto[:0]
	for _, cr := range n.offered {
		if allow(cr.Suite) {
			keep = append(keep, cr)
			o.Crypto = append(o.Crypto, cr.String())
		}
	}
	n.offered = keep
	if len(keep) == 0 && n.policy == mediaplan.SRTPRequired {
		return fmt.Errorf("SDES flags leave no crypto suite")
	}
	return nil
}

// Answer keys rtp from the trunk's answer to Offer, before rtp gets a
// remote address. It returns an error wrapping mediaplan.ErrSRTPRefused
// or mediaplan.ErrSRTPBadAnswer when the answer does not satisfy the
// policy, and one wrapping ErrDTLS when a DTLS-SRTP handshake fails.
func (n *Negotiation) Answer(ans sdp.Audio, rtp *media.RTPLeg) error {
	switch n.policy {
	case mediaplan.SRTPDTLS:
		return n.dtlsAnswer(ans, rtp)
	case mediaplan.SRTPOff, "":
		if len(ans.Crypto) > 0 || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: an encrypted answer to a plain offer", mediaplan.ErrSRTPBadAnswer)
		}
		return nil
	}
	if !mediaplan.SDESAllowed(n.route) {
		return mediaplan.ErrSDESInsecure
	}
	cfg, suite, err := mediaplan.PickSDES(n.offered, ans.Crypto)
	if err != nil {
		return err
	}
	if cfg == nil {
		if n.policy == mediaplan.SRTPRequired || strings.Contains(strings.ToUpper(ans.Proto), "SAVP") {
			return fmt.Errorf("%w: no a=crypto in the answer", mediaplan.ErrSRTPRefused)
		}
		n.opts.Log.Info("trunk answered without SRTP; media in the clear (srtp: optional)")
		return nil
	}
	if err := rtp.StartSRTP(cfg); err != nil {
		return fmt.Errorf("sdes keys: %w", err)
	}
	n.keyed, n.suite = true, suite
	n.settle()
	n.opts.Log.Info("sip leg encrypted", "srtp", "sdes", "suite", suite)
	return nil
}

// Inbound keys rtp with the keys taken from a trunk's offer (none: plain
// RTP), before rtp gets a remote address.
func (n *Negotiation) Inbound(k *mediaplan.InboundKeys, rtp *media.RTPLeg) error {
	n.policy = n.route.SRTP
	n.settle()
	if k == nil {
		return nil
	}
	cfg := k.Config
	if err := rtp.StartSRTP(&cfg); err != nil {
		return fmt.Errorf("sdes keys: %w", err)
	}
	n.keyed, n.suite = true, k.Suite
	n.settle()
	n.opts.Log.Info("sip leg encrypted", "srtp", "sdes", "suite", k.Suite)
	return nil
}
