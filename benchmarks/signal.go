package benchmarks

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
)

// sipSignaler places calls over SIP-over-WebSocket, spreading them over a
// few connections the way a farm of browsers would, without one per call.
type sipSignaler struct {
	conns []*sipWS
}

func newSipSignaler(ctx context.Context, wsURL string, n int, creds Credentials, log *slog.Logger, onBye func(string)) (*sipSignaler, error) {
	if n < 1 {
		n = 1
	}
	s := &sipSignaler{conns: make([]*sipWS, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.conns[i], errs[i] = newSipWS(ctx, wsURL, creds, log, onBye)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *sipSignaler) Setup(ctx context.Context, c *call, offer string) (string, int, error) {
	ws := s.conns[c.idx%len(s.conns)]
	d, answer, code, err := ws.Invite(ctx, c.id, c.user, "bench"+strconv.Itoa(c.idx), offer)
	if err != nil {
		return "", code, err
	}
	c.dlg, c.ws = d, ws
	return answer, code, nil
}

func (s *sipSignaler) Teardown(ctx context.Context, c *call) error {
	if c.ws == nil || c.dlg == nil {
		return errors.New("no dialog")
	}
	return c.ws.Bye(ctx, c.dlg)
}

func (s *sipSignaler) Close() {
	for _, c := range s.conns {
		if c != nil {
			c.Close()
		}
	}
}
