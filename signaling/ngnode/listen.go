package ngnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/mediarelay/mediarelay/pkg/config"
	"github.com/mediarelay/mediarelay/signaling/ng"
)

// ListenOptions is the node's ng control socket.
type ListenOptions struct {
	Addr  string   // ng.listen
	Allow []string // ng.allow: the sources of the proxies served
	Log   *slog.Logger
	// OnCommand, if set, counts each command served by its result.
	OnCommand func(command, result string)
}

// Listen opens the ng control socket and serves the proxies' commands on
// it until Close. It is called once, before Addr.
func (n *Node) Listen(o ListenOptions) error {
	var allow []netip.Prefix
	for _, a := range o.Allow {
		p, err := config.ParseSource(a)
		if err != nil {
			return fmt.Errorf("ng.allow %q: %w", a, err)
		}
		allow = append(allow, p)
	}
	srv, err := ng.Listen(o.Addr, n, ng.Options{Allow: allow, Logger: o.Log.With("component", "ng"), OnCommand: o.OnCommand})
	if err != nil {
		return err
	}
	n.srv = srv
	if a := n.Addr(); !a.Addr().IsLoopback() {
		o.Log.Warn("ng.listen is not a loopback address: firewall it so that only the SIP proxies reach it",
			"ng_listen", a.String(), "ng_allow", strings.Join(o.Allow, ","))
		if len(allow) == 0 {
			o.Log.Warn("ng.allow is empty: only proxies on this host (loopback) are served")
		}
	}
	go func() {
		if err := srv.Serve(); err != nil && !errors.Is(err, net.ErrClosed) {
			o.Log.Error("listener stopped", "listener", "ng", "err", err)
		}
	}()
	return nil
}

// Addr is the address of the ng control socket, or the zero AddrPort
// when it is not open.
func (n *Node) Addr() netip.AddrPort {
	if n.srv == nil {
		return netip.AddrPort{}
	}
	a, _ := netip.ParseAddrPort(n.srv.Addr().String())
	return a
}

// Close closes the ng control socket, if open: no offer creates a call
// after it.
func (n *Node) Close() {
	if n.srv != nil {
		_ = n.srv.Close()
	}
}
