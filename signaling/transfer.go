package signaling

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// Blind transfer (RFC 3515): the trunk leg sends REFER with Refer-To; the
// relay calls the target itself, on the same media port and codec, and
// swaps it in for the trunk leg, reporting progress with NOTIFY
// (message/sipfrag). The browser stays in the call.

// dialogRef is one dialog of a call, for requests the relay sends in it.
type dialogRef struct {
	target sip.Uri
	do     func(context.Context, *sip.Request) (*sip.Response, error)
	write  func(*sip.Request) error
}

func (c *Call) ref(s side) (dialogRef, error) {
	switch {
	case s == sideTrunk && c.trunk != nil:
		return dialogRef{c.trunk.InviteResponse.Contact().Address, c.trunk.Do, c.trunk.WriteRequest}, nil
	case s == sideTrunk && c.inTrunk != nil:
		return dialogRef{c.inTrunk.InviteRequest.Contact().Address, c.inTrunk.Do, c.inTrunk.WriteRequest}, nil
	case s == sideBrowser && c.browser != nil:
		return dialogRef{c.browser.InviteRequest.Contact().Address, c.browser.Do, c.browser.WriteRequest}, nil
	case s == sideBrowser && c.outBrowser != nil:
		return dialogRef{c.outBrowser.InviteResponse.Contact().Address, c.outBrowser.Do, c.outBrowser.WriteRequest}, nil
	}
	return dialogRef{}, fmt.Errorf("no %s dialog", sideName(s))
}

func (d dialogRef) request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	req := sip.NewRequest(method, *d.target.Clone())
	if body != nil {
		req.SetBody(body)
	}
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	return d.do(ctx, req)
}

func (r *Relay) onRefer(req *sip.Request, tx sip.ServerTransaction) {
	r.countRequest(req)
	c, s := r.callAndSide(req)
	if c == nil || c.answered.IsZero() {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	h := req.GetHeader("Refer-To")
	if h == nil {
		respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 mediarelay "Refer-To is required"`))
		return
	}
	var target sip.Uri
	params := sip.NewParams()
	if _, err := sip.ParseAddressValue(h.Value(), &target, &params); err != nil || target.User == "" {
		respond(tx, req, 400, "Bad Request")
		return
	}
	if target.Headers != nil && target.Headers.Has("Replaces") {
		respond(tx, req, 501, "Not Implemented", sip.NewHeader("Warning", `399 mediarelay "attended transfer is not supported"`))
		return
	}
	if s == sideBrowser {
		// The browser hands its peer on. The relay can connect the trunk
		// leg to another registered user; connecting it to a second trunk
		// leg is a call shape it does not carry.
		if _, ok := r.inb.creds.userFor(target.User); !ok {
			respond(tx, req, 603, "Decline", sip.NewHeader("Warning", `399 mediarelay "transfer target must be a registered user"`))
			return
		}
	}
	old, err := c.ref(s)
	if err != nil {
		respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	res := sip.NewResponseFromRequest(req, 202, "Accepted", nil)
	c.addContact(s, res)
	if err := tx.Respond(res); err != nil {
		return
	}
	if s == sideBrowser {
		go c.transferBrowser(old, target.User)
		return
	}
	go c.transferTrunk(old, target.User)
}

// notify reports a transfer's progress on the referring dialog.
func (c *Call) notify(d dialogRef, status string, final bool) {
	state := "active;expires=60"
	if final {
		state = "terminated;reason=noresource"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.request(ctx, sip.NOTIFY, []byte("SIP/2.0 "+status+"\r\n"),
		sip.NewHeader("Event", "refer"), sip.NewHeader("Subscription-State", state),
		sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	if err != nil {
		c.log.Debug("notify failed", "err", err)
	}
}

// transferTrunk replaces the trunk leg with a call to user.
func (c *Call) transferTrunk(old dialogRef, user string) {
	r := c.r
	c.notify(old, "100 Trying", false)
	route := r.route(user)
	if route == nil {
		c.notify(old, "404 Not Found", true)
		return
	}
	codecs := []sdp.Codec{c.plan.SIPCodec}
	if c.plan.SIPDTMF.PT != 0 {
		codecs = append(codecs, c.plan.SIPDTMF)
	}
	body := sdp.Offer{SessionID: uint64(time.Now().UnixNano()), Version: 1, Addr: r.mediaAddr(),
		Port: int(c.rtp.LocalAddr().Port()), Codecs: codecs, Ptime: route.Ptime}.Marshal()
	recipient := route.uri.Clone()
	recipient.User = user
	if route.Transport != "" && route.Transport != "udp" {
		if recipient.UriParams == nil {
			recipient.UriParams = sip.NewParams()
		}
		recipient.UriParams.Add("transport", route.Transport)
	}
	from := &sip.FromHeader{Address: sip.Uri{User: c.to, Host: r.host}, Params: sip.NewParams()}
	if c.direction == "outbound" {
		from.Address.User = c.from
	}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: sip.Uri{User: user, Host: recipient.Host}}
	ctx, cancel := context.WithTimeout(context.Background(), ringTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	dcs, err := r.dialogUAFor(route).Invite(ctx, *recipient, body, from, to, sip.NewHeader("Content-Type", "application/sdp"))
	if err == nil {
		err = dcs.WaitAnswer(ctx, sipgo.AnswerOptions{Username: route.Username, Password: route.Password})
	}
	if err != nil {
		var dr *sipgo.ErrDialogResponse
		status := "503 Service Unavailable"
		if errors.As(err, &dr) {
			status = fmt.Sprintf("%d %s", dr.Res.StatusCode, dr.Res.Reason)
		}
		c.log.Info("transfer failed", "target", user, "err", err)
		c.notify(old, status, true)
		return
	}
	_ = dcs.Ack(context.Background())
	_, ans, perr := sdp.Parse(dcs.InviteResponse.Body())
	if perr == nil {
		if _, ok := ans.Find(c.plan.SIPCodec.Name); !ok {
			perr = errNoCommonCodec
		}
	}
	if perr != nil {
		bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = dcs.Bye(bctx)
		bcancel()
		c.notify(old, "488 Not Acceptable Here", true)
		return
	}
	// Swap the trunk leg.
	r.mu.Lock()
	select {
	case <-c.ended:
		r.mu.Unlock()
		bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = dcs.Bye(bctx)
		bcancel()
		return
	default:
	}
	oldClient, oldServer := c.trunk, c.inTrunk
	delete(r.byDialog, c.trunkDialogID)
	c.trunk, c.inTrunk = dcs, nil
	c.trunkDialogID, c.trunkCallID = dcs.ID, dcs.InviteRequest.CallID().Value()
	c.route = route
	r.byDialog[dcs.ID] = c
	r.mu.Unlock()
	c.mid.mu.Lock()
	c.mid.sipVer, c.mid.trunkDir = 0, ""
	c.mid.setDir(sideTrunk, "sendrecv")
	c.mid.mu.Unlock()
	c.setRemote(ans)
	c.log.Info("transferred", "target", user, "trunk", route.Name)

	c.notify(old, "200 OK", true)
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	if oldClient != nil {
		_ = oldClient.Bye(bctx)
	} else if oldServer != nil {
		_ = oldServer.Bye(bctx)
	}
}

// onNotify accepts in-dialog NOTIFYs (a peer reporting on a transfer it
// performs); the relay has nothing to do with them.
func (r *Relay) onNotify(req *sip.Request, tx sip.ServerTransaction) {
	r.countRequest(req)
	if c := r.callFor(req); c == nil {
		respond(tx, req, 481, "Subscription Does Not Exist")
		return
	}
	respond(tx, req, 200, "OK")
}
