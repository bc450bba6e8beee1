package signaling

import (
	"testing"
	"time"
)

// TestNGAnsweredWhileRead: the call API reads an ng call while the
// proxy's answer marks it answered; afterwards it shows the call answered
// by the answerer's tag, as its CDR does. Under -race it also checks that
// the answer time and the tag are set as their readers read them.
func TestNGAnsweredWhileRead(t *testing.T) {
	r := ngRelay(t)
	ngc := newNGClient(t, r)
	p := newPhone(t, "PCMU")
	ngc.ok(map[string]any{
		"command": "offer", "call-id": "ng-answered-1", "from-tag": "caller",
		"sdp": p.offer(), "transport-protocol": "RTP/AVP", "ICE": "remove", "DTLS": "off",
	})
	c := r.ngSession("ng-answered-1").c
	api := apiCalls{r}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = api.View(c.id)
			time.Sleep(time.Millisecond)
		}
	}()
	peer := newPlainPeer(t)
	ngc.ok(map[string]any{
		"command": "answer", "call-id": "ng-answered-1", "from-tag": "caller", "to-tag": "callee",
		"sdp": peer.sdp(), "transport-protocol": "UDP/TLS/RTP/SAVPF", "ICE": "force",
	})
	close(stop)
	<-done
	v, ok := api.View(c.id)
	if !ok || v.State != "answered" || v.Answer == nil || v.To != "callee" {
		t.Errorf("the answered ng call's view: found %v, state %q, answer %v, to %q", ok, v.State, v.Answer, v.To)
	}
	ngc.ok(map[string]any{"command": "delete", "call-id": "ng-answered-1"})
	if rec := callRecord(t, r, c.id); rec.Answer.IsZero() || rec.To != "callee" {
		t.Errorf("CDR answer %v, to %q", rec.Answer, rec.To)
	}
}
