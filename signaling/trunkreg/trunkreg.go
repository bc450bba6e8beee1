// Package trunkreg keeps the relay registered at the trunks that ask for
// it (trunks[].register): a REGISTER answered with digest if challenged,
// refreshed at half the expiry the trunk grants, retried after a failure,
// and withdrawn when the relay stops. It is the relay acting as a SIP UA
// towards a trunk; calls play no part.
package trunkreg

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/config"
)

// retry is how long the relay waits after a failed registration to a
// trunk before trying again.
var retry = 30 * time.Second

// registration is one registration binding of the relay at a trunk.
type registration struct {
	client  *sipgo.Client
	contact sip.ContactHeader
	t       *config.Trunk
	user    string
	callID  string
	fromTag string
	cseq    uint32
}

// Keep keeps the relay registered at t (compiled by config.CompileTrunk,
// so its register user and expiry are filled) until ctx ends, then
// unregisters.
// client sends the REGISTERs; contact is the relay's Contact for t's
// transport (its user is replaced by the registered user); callID names
// the registration for all its refreshes. status is told whether the
// registration is in force after each attempt.
func Keep(ctx context.Context, client *sipgo.Client, contact sip.ContactHeader, t *config.Trunk, callID string,
	log *slog.Logger, status func(bool)) {
	reg := &registration{client: client, contact: contact, t: t, user: t.RegisterUser, callID: callID, fromTag: sip.GenerateTagN(16)}
	for {
		granted, err := reg.register(ctx, t.RegisterExpires)
		wait := retry
		if err != nil {
			status(false)
			if ctx.Err() == nil {
				log.Warn("registration to trunk failed", "trunk", t.Name, "err", err)
			}
		} else {
			status(true)
			wait = max(granted/2, time.Second)
			log.Debug("registered to trunk", "trunk", t.Name, "expires", granted)
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

// regError is a REGISTER's final answer other than 200.
type regError struct{ res *sip.Response }

func (e *regError) Error() string {
	return "REGISTER answered " + strconv.Itoa(int(e.res.StatusCode)) + " " + e.res.Reason
}

// register sends one REGISTER (answering a digest challenge) and returns
// the expiry the trunk granted.
func (g *registration) register(ctx context.Context, expires time.Duration) (time.Duration, error) {
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
	contact := g.contact.Clone()
	contact.Address.User = g.user
	req.AppendHeader(contact)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires.Seconds()))))
	if t.Transport != "" && t.Transport != "udp" {
		req.SetTransport(strings.ToUpper(t.Transport))
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := g.client.Do(rctx, req)
	if err != nil {
		return 0, err
	}
	if (res.StatusCode == 401 || res.StatusCode == 407) && t.Password != "" {
		username := t.Username
		if username == "" {
			username = g.user
		}
		res, err = g.client.DoDigestAuth(rctx, req, res, sipgo.DigestAuth{Username: username, Password: t.Password})
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
