package signaling

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mediarelay/mediarelay/pkg/cdr"
	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/callapi"
	"github.com/mediarelay/mediarelay/signaling/mediaplan"
)

const testAdminToken = "s3cret-admin-token-0123456789"

func TestValidCallID(t *testing.T) {
	if !callapi.ValidID(newCallID()) {
		t.Error("a fresh call id is not valid")
	}
	for _, id := range []string{"", "0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", "../../../etc/pa", "0123456789abcdeg"} {
		if callapi.ValidID(id) {
			t.Errorf("%q accepted", id)
		}
	}
}

// apiRequest makes a request of the relay's call API.
func apiRequest(t *testing.T, r *Relay, method, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+r.HTTPAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

// TestAPILoopbackWithoutToken: with no http.admin_token the API serves its
// loopback clients.
func TestAPILoopbackWithoutToken(t *testing.T) {
	r := startRelay(t, nil)
	code, body := apiRequest(t, r, http.MethodGet, "/api/calls", "")
	if code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("GET /api/calls = %d %s", code, body)
	}
	if code, _ := apiRequest(t, r, http.MethodGet, "/calls", ""); code != http.StatusOK {
		t.Errorf("GET /calls = %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.HTTPAddr().String()+"/api/calls", nil)
	req.Host = "rebound.example"
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("GET /api/calls with Host rebound.example = %d, want 403", res.StatusCode)
	}
}

// TestAPICalls lists, reads and hangs up a real call through the API with
// a bearer token, and refuses what it must.
func TestAPICalls(t *testing.T) {
	r, u, p, id := startAdminCall(t)
	p.sendFrames(25, 160)
	p.collect(300 * time.Millisecond)
	// The browser is told the media mode (the softphone shows it).
	if h := p.dcs.InviteResponse.GetHeader(modeHeader); h == nil || h.Value() != mediaplan.ModePassthrough {
		t.Errorf("%s in the 200 OK: %v", modeHeader, h)
	}

	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{http.MethodGet, "/api/calls", "", http.StatusUnauthorized},
		{http.MethodGet, "/api/calls", "wrong-token-0123456789", http.StatusUnauthorized},
		{http.MethodDelete, "/api/calls/" + id, "wrong-token-0123456789", http.StatusUnauthorized},
		{http.MethodGet, "/api/calls/0123456789abcdef", testAdminToken, http.StatusNotFound},
		{http.MethodDelete, "/api/calls/0123456789abcdef", testAdminToken, http.StatusNotFound},
		{http.MethodGet, "/api/calls/not-a-call-id", testAdminToken, http.StatusBadRequest},
		{http.MethodGet, "/api/calls/" + strings.ToUpper(id), testAdminToken, http.StatusBadRequest},
		{http.MethodGet, "/api/calls/" + id + "/legs", testAdminToken, http.StatusNotFound},
		{http.MethodGet, "/api/nothing", testAdminToken, http.StatusNotFound},
		{http.MethodPost, "/api/calls", testAdminToken, http.StatusMethodNotAllowed},
		{http.MethodPut, "/api/calls/" + id, testAdminToken, http.StatusMethodNotAllowed},
	} {
		if code, body := apiRequest(t, r, tc.method, tc.path, tc.token); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
	if r.ActiveCalls() != 1 {
		t.Fatal("a refused request ended the call")
	}

	code, body := apiRequest(t, r, http.MethodGet, "/api/calls", testAdminToken)
	var list []callapi.CallView
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list) != 1 {
		t.Fatalf("GET /api/calls = %d %s (%v)", code, body, err)
	}
	v := list[0]
	if v.ID != id || v.Trunk != "carrier" || v.Direction != "outbound" || v.Transport != "udp" || v.State != "answered" ||
		v.To != "1000" || v.From == "" || v.Mode != mediaplan.ModePassthrough || v.Answer == nil || v.Start.IsZero() ||
		!strings.EqualFold(v.Codecs["webrtc"], "PCMU") || !strings.EqualFold(v.Codecs["sip"], "PCMU") ||
		v.Legs["webrtc"].PacketsIn < 20 || v.Legs["sip"].PacketsOut < 20 {
		t.Errorf("call view: %s", body)
	}
	code, body = apiRequest(t, r, http.MethodGet, "/api/calls/"+id, testAdminToken)
	var one callapi.CallView
	if err := json.Unmarshal(body, &one); code != http.StatusOK || err != nil || one.ID != id {
		t.Errorf("GET /api/calls/%s = %d %s", id, code, body)
	}

	if code, body := apiRequest(t, r, http.MethodDelete, "/api/calls/"+id, testAdminToken); code != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	checkAdminHangup(t, r, u, p, id)
	if code, _ := apiRequest(t, r, http.MethodGet, "/api/calls/"+id, testAdminToken); code != http.StatusNotFound {
		t.Errorf("GET of the ended call = %d", code)
	}
	if v := metricValue(metricsText(t, r), "mediarelay_calls_total", `cause="admin_hangup",trunk="carrier"`); v != 1 {
		t.Errorf("calls_total{admin_hangup,carrier} = %v", v)
	}
}

// startAdminCall starts a relay with testAdminToken and a PCMU trunk and
// places a call through it; it returns the relay, the trunk, the phone and
// the call's id.
func startAdminCall(t *testing.T) (*Relay, *trunkUAS, *phone, string) {
	t.Helper()
	u := newTrunkUAS(t)
	r := startRelay(t, func(c *config.Config) {
		withTrunk(u, mediaplan.ModeAuto, "PCMU")(c)
		c.HTTP.AdminToken = testAdminToken
	})
	p := newPhone(t, "PCMU")
	p.call(r, "1000")
	return r, u, p, activeCallID(t, r)
}

// checkAdminHangup: after an operator's hang-up both legs got a BYE, the
// call is gone and its CDR says the operator on loopback ended it.
func checkAdminHangup(t *testing.T, r *Relay, u *trunkUAS, p *phone, id string) {
	t.Helper()
	for leg, byes := range map[string]chan struct{}{"trunk": u.byes, "browser": p.byes} {
		select {
		case <-byes:
		case <-time.After(5 * time.Second):
			t.Errorf("the %s never got a BYE", leg)
		}
	}
	waitFor(t, "call cleanup", 5*time.Second, func() bool { return r.ActiveCalls() == 0 })
	rec := callRecord(t, r, id)
	if rec.EndCause != cdr.CauseAdminHangup || rec.EndedBy != "admin@127.0.0.1" {
		t.Errorf("CDR end cause %q, ended by %q", rec.EndCause, rec.EndedBy)
	}
}
