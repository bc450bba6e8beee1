package signaling

import (
	"errors"
	"fmt"

	"github.com/mediarelay/mediarelay/pkg/sdp"
)

// errDTLS is wrapped by every DTLS-SRTP setup failure.
var errDTLS = errors.New("dtls-srtp")

// dtlsOffer is the DTLS-SRTP state of a call's SIP leg.
type dtlsOffer struct{}

func (c *Call) dtlsOffer(o *sdp.Offer) error {
	return fmt.Errorf("%w: not supported yet", errDTLS)
}

func (c *Call) dtlsAnswer(ans sdp.Audio) error {
	return fmt.Errorf("%w: not supported yet", errDTLS)
}
