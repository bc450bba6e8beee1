// Package web serves the built-in softphone page: a static HTML/JS client
// with its own minimal SIP-over-WebSocket user agent (RFC 7118), used as the
// demo page of `mediarelay serve` and by the browser tests
// (signaling/web/browsertest).
//
// The page connects to ws(s)://<its host>/ws with subprotocol "sip" and
// calls sip:echo@<its host> by default. Query parameters override that:
//
//	ws=URL          the SIP WebSocket (e.g. ws://127.0.0.1:5066/ws)
//	target=URI      the initial call target
//	user=NAME       our SIP user (default webphone)
//	password=PW     answers digest challenges to REGISTER and INVITE
//	domain=HOST     our SIP domain for REGISTER (default: the page's host)
//	register=1      register on load, to receive calls
//
// Tests drive the page through window.mediarelay: call(target, {audioProcessing}),
// hangup(), dtmf(digits), answer(), register(user, password), unregister(),
// toneLevels([hz...]) and the fields state, lastCode, lastReason, endedBy,
// hangupAcked, media, micLevel, stats, registered, incoming and log.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// contentTypes is explicit rather than taken from mime.TypeByExtension,
// because that consults the host's /etc/mime.types and a wrong type for a
// module script makes the browser refuse to run it.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".ico":  "image/x-icon",
	".png":  "image/png",
}

type file struct {
	name        string
	contentType string
	etag        string
	data        []byte
}

// Handler returns an http.Handler serving the softphone page and its
// assets. "/" serves index.html; unknown paths and directories are 404 (no
// listings). Responses carry Cache-Control: no-cache and a strong ETag, so a
// browser revalidates after an upgrade of the relay instead of running a
// stale client against a newer server.
func Handler() http.Handler {
	files := map[string]*file{}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ct := contentTypes[path.Ext(p)]
		if ct == "" {
			ct = "application/octet-stream"
		}
		files["/"+p] = &file{
			name:        p,
			contentType: ct,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
			data:        data,
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	files["/"] = files["/index.html"]
	files["/calls"] = files["/calls.html"] // the operator's live call view

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		f := files[r.URL.Path]
		if f == nil || strings.Contains(r.URL.Path, "..") {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		// ServeContent handles HEAD, Range and If-None-Match (304) for us.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.data))
	})
}
