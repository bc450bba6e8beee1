package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v4"
)

// The load client is a full ICE agent in the controlling role (RFC 8445),
// as a browser that sent the offer is, reduced to what one host candidate
// on loopback needs: it checks every remote candidate of the answer with
// USE-CANDIDATE (aggressive nomination) until one succeeds, answers the
// checks a full peer (rtpengine) sends, and keeps consent (RFC 7675) on
// the chosen pair.

// checkPriority is our PRIORITY attribute: a peer-reflexive candidate's
// priority for component 1 (RFC 8445 §5.1.2.1, type preference 110).
var checkPriority = func() []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 110<<24|65535<<8|255)
	return b[:]
}()

// Retransmission of connectivity checks: RFC 8445's RTO starts at 500 ms
// for a browser with many pairs; with one pair on loopback a faster start
// keeps setup time the relay's rather than the client's.
const (
	checkRTOStart = 50 * time.Millisecond
	checkRTOMax   = 500 * time.Millisecond
)

// consentLost is how long without a verified response or authenticated
// packet from the peer before the call counts as dropped. A browser's
// consent expires after 30 s (RFC 7675 §5.1); a benchmark window is
// shorter, so the client notices sooner.
const consentLost = 15 * time.Second

// consentInterval is the wait before the next consent check: 5 s,
// randomised over [0.8, 1.2) as RFC 7675 §5.1 asks.
func consentInterval() time.Duration {
	return 4*time.Second + mrand.N(2*time.Second)
}

// attr is a STUN attribute given as raw bytes (ICE's attributes have no
// setter in pion/stun).
type attr struct {
	t stun.AttrType
	v []byte
}

func (a attr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

// bindingRequest builds a check of ours: USERNAME remote:local, signed
// with the peer's password.
func (c *call) bindingRequest(tx [12]byte, tieBreaker []byte, nominate bool) (*stun.Message, error) {
	s := []stun.Setter{
		stun.NewTransactionIDSetter(tx), stun.BindingRequest,
		stun.NewUsername(c.remoteUfrag + ":" + c.ufrag),
		attr{stun.AttrPriority, checkPriority},
		attr{stun.AttrICEControlling, tieBreaker},
	}
	if nominate {
		s = append(s, attr{stun.AttrUseCandidate, nil})
	}
	s = append(s, stun.NewShortTermIntegrity(c.remotePwd), stun.Fingerprint)
	return stun.Build(s...)
}

// checkConnectivity checks every remote candidate, retransmitting with
// backoff, until one answers.
func (sh *shard) checkConnectivity(ctx context.Context, c *call) error {
	rto := checkRTOStart
	t := time.NewTimer(rto)
	defer t.Stop()
	for {
		done, err := sh.sendChecks(c)
		if done {
			return nil
		}
		if err != nil {
			return err
		}
		t.Reset(rto)
		select {
		case <-c.iceDone:
			return nil
		case <-t.C:
			rto = min(2*rto, checkRTOMax)
		case <-ctx.Done():
			return errors.New("no connectivity check answered: " + ctx.Err().Error())
		}
	}
}

// sendChecks sends (or resends, with the same transactions) a check to
// each remote candidate. done is true, and nothing is sent, once a check
// has succeeded: the caller's timer and the success may race.
func (sh *shard) sendChecks(c *call) (done bool, err error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.iceOK {
		return true, nil
	}
	if c.closed {
		return false, errors.New("call closed")
	}
	if c.checks == nil {
		if len(c.cands) == 0 {
			return false, errors.New("the answer has no usable candidate")
		}
		for _, to := range c.cands {
			c.checks = append(c.checks, pendingCheck{tx: stun.NewTransactionID(), to: to})
		}
	}
	var errs []error
	for _, pc := range c.checks {
		m, err := c.bindingRequest(pc.tx, sh.cl.tieBreaker[:], true)
		if err == nil {
			err = c.sendTo(m.Raw, pc.to)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(c.checks) {
		return false, errors.Join(errs...) // no candidate reachable at all
	}
	return false, nil
}

// consent sends a consent check on the chosen pair, or marks the call
// dropped when the peer has been silent too long. Under sh.mu.
func (sh *shard) consent(c *call, now time.Time) {
	if now.Sub(c.lastCheck) > consentLost {
		c.failReason = "ICE consent lost"
		c.sending.Store(false)
		c.dropped.Store(true)
		sh.cl.log.Debug("call dropped", "call", c.user, "reason", c.failReason)
		return
	}
	c.nextCheck = now.Add(consentInterval())
	c.consentTx = stun.NewTransactionID()
	m, err := c.bindingRequest(c.consentTx, sh.cl.tieBreaker[:], false)
	if err == nil {
		err = c.sendPair(m.Raw)
	}
	if err != nil {
		sh.cl.log.Debug("consent check not sent", "call", c.user, "err", err)
	}
}

// stun handles a STUN message on a call's socket: a check from the peer,
// or the answer to one of ours. Under sh.mu.
func (sh *shard) stun(c *call, pkt []byte, from netip.AddrPort, now time.Time) {
	m := &stun.Message{Raw: pkt}
	if err := m.Decode(); err != nil {
		return
	}
	if m.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(m); err != nil {
			return
		}
	}
	switch m.Type {
	case stun.BindingRequest:
		sh.answerCheck(c, m, from, now)
	case stun.BindingSuccess:
		sh.checkAnswered(c, m, from, now)
	}
}

// answerCheck answers a full peer's connectivity or consent check
// (RFC 8445 §7.3), signed with our password.
func (sh *shard) answerCheck(c *call, m *stun.Message, from netip.AddrPort, now time.Time) {
	var user stun.Username
	if err := user.GetFrom(m); err != nil {
		return
	}
	local, remote, ok := strings.Cut(string(user), ":")
	// Before the answer is applied the peer's ufrag is unknown; a peer
	// may check as soon as it has answered.
	if !ok || local != c.ufrag || (c.remoteUfrag != "" && remote != c.remoteUfrag) {
		return
	}
	integrity := stun.NewShortTermIntegrity(c.pwd)
	if err := integrity.Check(m); err != nil {
		return
	}
	resp, err := stun.Build(m, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())},
		integrity, stun.Fingerprint)
	if err != nil {
		return
	}
	if err := c.sendTo(resp.Raw, from); err != nil {
		sh.cl.log.Debug("stun response not sent", "call", c.user, "to", from.String(), "err", err)
		return
	}
	c.lastCheck = now
	if !c.remote.IsValid() {
		// A verified pair: DTLS from it is accepted even before a check
		// of ours has come back (a peer acting as DTLS client may start
		// its handshake at once).
		c.remote = from
	}
}

// checkAnswered takes a success response to a check of ours: for a
// connectivity check it selects (and nominates) the pair, for a consent
// check it renews consent.
func (sh *shard) checkAnswered(c *call, m *stun.Message, from netip.AddrPort, now time.Time) {
	consent := c.iceOK && m.TransactionID == c.consentTx
	var to netip.AddrPort
	for _, pc := range c.checks {
		if pc.tx == m.TransactionID && !c.iceOK {
			to = pc.to
		}
	}
	if !consent && !to.IsValid() {
		return
	}
	if consent {
		to = c.remote
	}
	// The response must come from where the check went (RFC 8445
	// §7.2.5.2.1) and carry the peer's password.
	if from != to || stun.NewShortTermIntegrity(c.remotePwd).Check(m) != nil {
		return
	}
	c.lastCheck = now
	if consent {
		return
	}
	c.remote = from
	c.checks = nil
	c.iceOK = true
	if c.tcp != nil {
		c.connected = true // the connection is the pair
	} else if err := c.sock.connect(from); err != nil {
		sh.cl.log.Debug("connect to the selected pair failed; sending unconnected", "call", c.user, "err", err)
	} else {
		c.connected = true
	}
	close(c.iceDone)
}
