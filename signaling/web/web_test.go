package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	cases := []struct {
		path, wantType, wantBody string
		wantCode                 int
	}{
		{"/", "text/html; charset=utf-8", "<title>mediarelay softphone</title>", 200},
		{"/index.html", "text/html; charset=utf-8", "app.js", 200},
		{"/app.js", "text/javascript; charset=utf-8", "window.mediarelay", 200},
		{"/sip.js", "text/javascript; charset=utf-8", "export class UA", 200},
		{"/style.css", "text/css; charset=utf-8", ".phone", 200},
		{"/static/", "", "", 404},
		{"/nope.js", "", "", 404},
		{"/../web.go", "", "", 404},
	}
	for _, c := range cases {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != c.wantCode {
			t.Errorf("GET %s: status %d, want %d", c.path, resp.StatusCode, c.wantCode)
			continue
		}
		if c.wantCode != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.wantType {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.wantType)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", c.path, got)
		}
		if !strings.Contains(body, c.wantBody) {
			t.Errorf("GET %s: body lacks %q", c.path, c.wantBody)
		}
	}
}

func TestHandlerRevalidates(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/app.js")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: status %d, want 304", resp.StatusCode)
	}
}

func TestHandlerMethods(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 {
		t.Errorf("HEAD /: status %d, length %d", resp.StatusCode, resp.ContentLength)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSIPUserAgentJS runs the JavaScript unit tests of the page's SIP user
// agent (testdata/sip_test.mjs) under node, when node is installed.
func TestSIPUserAgentJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed (.ci/deps installs it)")
	}
	// static/*.js are browser modules without a package.json saying so;
	// module detection lets node load them as ES modules all the same.
	cmd := exec.Command(node, "--experimental-detect-module", "--test", "testdata/sip_test.mjs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
