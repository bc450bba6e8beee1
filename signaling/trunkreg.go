package signaling

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// trunkRegRetry is how long the relay waits after a failed registration
// to a trunk before trying again.
var trunkRegRetry = 30 * time.Second

// startTrunkRegistrations keeps the relay registered to every trunk with
// register set, until ctx ends; then it unregisters.
func (r *Relay) startTrunkRegistrations(ctx context.Context) {
	gauge := r.m.NewGaugeVec("mediarelay_trunk_registered", "1 while the relay's registration to the trunk is in force.", "trunk")
	for _, t := range r.routes.Trunks {
		if !t.Register {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.keepRegistered(ctx, t, func(up bool) {
				if up {
					gauge.WithLabelValues(t.Name).Set(1)
				} else {
					gauge.WithLabelValues(t.Name).Set(0)
				}
			})
		}()
	}
}

// trunkRegistration is one registration binding of the relay at a trunk.
type trunkRegistration struct {
	r       *Relay
	t       *config.Trunk
	user    string
	callID  string
	fromTag string
	cseq    uint32
}

func (r *Relay) keepRegistered(ctx context.Context, t *config.Trunk, status func(bool)) {
	reg := &trunkRegistration{r: r, t: t, user: firstNonEmpty(t.RegisterUser, t.Username),
		callID: newCallID() + newCallID() + "@" + r.host, fromTag: sip.GenerateTagN(16)}
	want := t.RegisterExpires
	if want <= 0 {
		want = time.Hour
	}
	for {
		granted, err := reg.register(ctx, want)
		wait := trunkRegRetry
		if err != nil {
			status(false)
			if ctx.Err() == nil {
				r.log.Warn("registration to trunk failed", "trunk", t.Name, "err", err)
			}
		} else {
			status(true)
			wait = max(granted/2, time.Second)
			r.log.Debug("registered to trunk", "trunk", t.Name, "expires", granted)
		}
		select {
		case <-ctx.Done():
			status(false)
			if err == nil {
				uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, _ = reg.register(uctx, 0)
				cancel()
			}
			return
		case <-time.After(wait):
		}
	}
}

type regError struct{ res *sip.Response }

func (e *regError) Error() string {
	return "REGISTER answered " + strconv.Itoa(int(e.res.StatusCode)) + " " + e.res.Reason
}

// register sends one REGISTER (answering a digest challenge) and returns
// the expiry the trunk granted.
func (g *trunkRegistration) register(ctx context.Context, expires time.Duration) (time.Duration, error) {
	t := g.t
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: t.URI().Host, Port: t.URI().Port})
	aor := sip.Uri{User: g.user, Host: t.URI().Host}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", g.fromTag)
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	callID := sip.CallIDHeader(g.callID)
	req.AppendHeader(&callID)
	g.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: g.cseq, MethodName: sip.REGISTER})
	contact := g.r.dialogUAFor(t).ContactHDR.Clone()
	contact.Address.User = g.user
	req.AppendHeader(contact)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires.Seconds()))))
	if t.Transport != "" && t.Transport != "udp" {
		req.SetTransport(strings.ToUpper(t.Transport))
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := g.r.client.Do(rctx, req)
	if err != nil {
		return 0, err
	}
	if (res.StatusCode == 401 || res.StatusCode == 407) && t.Password != "" {
		res, err = g.r.client.DoDigestAuth(rctx, req, res, sipgo.DigestAuth{Username: firstNonEmpty(t.Username, g.user), Password: t.Password})
		if err != nil {
			return 0, err
		}
		g.cseq = req.CSeq().SeqNo
	}
	if res.StatusCode != 200 {
		return 0, &regError{res}
	}
	granted := expires
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			granted = time.Duration(n) * time.Second
		}
	}
	for _, h := range res.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok && c.Address.User == g.user && c.Params != nil {
			if v, ok := c.Params.Get("expires"); ok {
				if n, err := strconv.Atoi(v); err == nil {
					granted = time.Duration(n) * time.Second
				}
			}
		}
	}
	return granted, nil
}
