package signaling

import (
	"context"
	"net"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// boundRequester sends the relay's requests from the addresses it was told
// to use: over UDP from the configured listener's socket (sipgo would
// otherwise open a socket on 0.0.0.0:<ephemeral> that answers anyone's
// SIP), over TCP and TLS from the configured host address.
type boundRequester struct {
	tx  *sip.TransactionLayer
	tp  *sip.TransportLayer
	udp *net.UDPAddr // the UDP listener; nil when there is none
	ip  net.IP       // local address for TCP/TLS connections; nil: the kernel's choice
}

// Request binds req and hands it to the transaction layer (ACKs, which
// have no transaction, to the transport).
func (b *boundRequester) Request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	switch strings.ToLower(req.Transport()) {
	case "udp":
		if b.udp != nil && req.Laddr.IP == nil {
			req.Laddr = sip.Addr{IP: b.udp.IP, Port: b.udp.Port}
		}
	case "tcp", "tls":
		if b.ip != nil && req.Laddr.IP == nil {
			req.Laddr = sip.Addr{IP: b.ip}
		}
	}
	if req.IsAck() {
		return nil, b.tp.WriteMsg(req)
	}
	return b.tx.Request(ctx, req)
}

// bindClient makes client send from the relay's configured addresses.
func (r *Relay) bindClient(client *sipgo.Client) {
	b := &boundRequester{tx: r.ua.TransactionLayer(), tp: r.ua.TransportLayer()}
	if a, ok := r.udpAddr.(*net.UDPAddr); ok {
		b.udp = a
	}
	if ip := net.ParseIP(r.cfg.Media.BindIP); ip != nil && !ip.IsUnspecified() {
		b.ip = ip
	}
	client.TxRequester = b
}
