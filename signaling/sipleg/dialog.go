package sipleg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// dialog is one SIP dialog the relay is a party to: it placed the call
// (dcs), or the peer did (dss).
type dialog struct {
	dcs    *sipgo.DialogClientSession
	dss    *sipgo.DialogServerSession
	id     string // sipgo's dialog id, "" until the dialog is confirmed
	callID string
}

// Exists says whether the dialog has a session to send requests in.
func (d *dialog) Exists() bool { return d.dcs != nil || d.dss != nil }

// PlacedByPeer says the peer sent the INVITE: the relay is its UAS.
func (d *dialog) PlacedByPeer() bool { return d.dss != nil }

// ID is sipgo's id of the dialog (Call-ID and both tags), "" until the
// dialog is confirmed: what the router files the leg's call or join under.
func (d *dialog) ID() string { return d.id }

// CallID is the dialog's Call-ID, for logs and CDRs.
func (d *dialog) CallID() string { return d.callID }

// PeerAnswer is the body of the peer's 2xx to the relay's INVITE (the SDP
// that settled the session), nil on a dialog the peer placed.
func (d *dialog) PeerAnswer() []byte {
	if d.dcs == nil || d.dcs.InviteResponse == nil {
		return nil
	}
	return d.dcs.InviteResponse.Body()
}

// Ref is the dialog, for requests the relay sends in it.
func (d *dialog) Ref() (DialogRef, error) {
	switch {
	case d.dcs != nil:
		return clientRef(d.dcs), nil
	case d.dss != nil:
		return serverRef(d.dss), nil
	}
	return DialogRef{}, errNoDialog
}

var errNoDialog = errors.New("no dialog")

// Request sends a request in the dialog and waits for its final response;
// a 2xx to an INVITE is ACKed.
func (d *dialog) Request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	ref, err := d.Ref()
	if err != nil {
		return nil, err
	}
	return ref.Request(ctx, method, body, hdrs...)
}

// Bye ends the dialog; a leg without one has nothing to end.
func (d *dialog) Bye(ctx context.Context) error {
	switch {
	case d.dcs != nil:
		return d.dcs.Bye(ctx)
	case d.dss != nil:
		return d.dss.Bye(ctx)
	}
	return nil
}

// ReadAck takes the ACK of the relay's 2xx on a dialog the peer placed,
// and reports whether there was one to take.
func (d *dialog) ReadAck(req *sip.Request, tx sip.ServerTransaction) bool {
	if d.dss == nil {
		return false
	}
	_ = d.dss.ReadAck(req, tx)
	return true
}

// ReadBye answers a BYE the peer sent in the dialog.
func (d *dialog) ReadBye(req *sip.Request, tx sip.ServerTransaction) {
	switch {
	case d.dcs != nil:
		_ = d.dcs.ReadBye(req, tx)
	case d.dss != nil:
		_ = d.dss.ReadBye(req, tx)
	default:
		Respond(tx, req, 200, "OK")
	}
}

// DialogRef is one dialog, for requests the relay sends in it: what a
// transfer keeps of the dialog its REFER came on, to NOTIFY there while
// the leg itself may be replaced.
type DialogRef struct {
	target sip.Uri
	do     func(context.Context, *sip.Request) (*sip.Response, error)
	write  func(*sip.Request) error
}

// clientRef is a dialog the relay placed: requests go to the answer's
// Contact (the Request-URI if a peer sent none).
func clientRef(d *sipgo.DialogClientSession) DialogRef {
	target := d.InviteRequest.Recipient
	if ct := d.InviteResponse.Contact(); ct != nil {
		target = ct.Address
	}
	return DialogRef{target, d.Do, d.WriteRequest}
}

// serverRef is a dialog the peer placed: requests go to its INVITE's
// Contact (its From address if it sent none).
func serverRef(d *sipgo.DialogServerSession) DialogRef {
	target := d.InviteRequest.From().Address
	if ct := d.InviteRequest.Contact(); ct != nil {
		target = ct.Address
	}
	return DialogRef{target, d.Do, d.WriteRequest}
}

// Request sends a request in the dialog and waits for its final response;
// a 2xx to an INVITE is ACKed.
func (d DialogRef) Request(ctx context.Context, method sip.RequestMethod, body []byte, hdrs ...sip.Header) (*sip.Response, error) {
	req := sip.NewRequest(method, *d.target.Clone())
	if body != nil {
		req.SetBody(body)
	}
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	res, err := d.do(ctx, req)
	if err == nil && res == nil {
		// sipgo ends a transaction whose transport went away with neither.
		err = errNoResponse
	}
	if err != nil || method != sip.INVITE || !res.IsSuccess() {
		return res, err
	}
	ack := sip.NewRequest(sip.ACK, *d.target.Clone())
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	if err := d.write(ack); err != nil {
		return res, fmt.Errorf("ack: %w", err)
	}
	return res, nil
}

var errNoResponse = errors.New("transaction ended without a final response")

// NotifyRefer sends a REFER's NOTIFY (RFC 3515) with a sipfrag status
// line; final ends the implicit subscription. A failure is only logged:
// the transfer's outcome does not depend on the referrer hearing of it.
func (d DialogRef) NotifyRefer(log *slog.Logger, status string, final bool) {
	state := "active;expires=60"
	if final {
		state = "terminated;reason=noresource"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.Request(ctx, sip.NOTIFY, []byte("SIP/2.0 "+status+"\r\n"),
		sip.NewHeader("Event", "refer"), sip.NewHeader("Subscription-State", state),
		sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	if err != nil {
		log.Debug("notify failed", "err", err)
	}
}

// Respond answers req, in a dialog or not, with a response without a
// body.
func Respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

// OKWithSDP is a 200 to req carrying body as SDP, or no body if empty.
func OKWithSDP(req *sip.Request, body string) *sip.Response {
	if body == "" {
		return sip.NewResponseFromRequest(req, 200, "OK", nil)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", []byte(body))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	return res
}
