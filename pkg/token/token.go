// Package token mints and reads shared-secret, time-limited SIP credentials
// in the convention of coturn's REST API: the username is "EXPIRY:USER"
// (EXPIRY in Unix seconds) and the password is
// base64(HMAC-SHA1(secret, username)). A web application that knows the
// secret hands them to a browser; the relay checks them without a user table.
package token

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// maxUsername bounds the usernames Parse looks at; a longer one is not a token.
const maxUsername = 256

// ErrNotToken means a username is not of the form EXPIRY:USER.
var ErrNotToken = errors.New("username is not EXPIRY:USER")

// Password is the password that goes with username for secret.
func Password(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Mint returns a username and password for user, valid until expires.
func Mint(secret, user string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + user
	return username, Password(secret, username)
}

// Parse splits a token username into its expiry and user. The expiry is
// decimal Unix seconds (1 to 12 digits); the user is not empty, has no
// colon, and holds no control characters or spaces.
func Parse(username string) (expires time.Time, user string, err error) {
	if len(username) > maxUsername {
		return time.Time{}, "", ErrNotToken
	}
	exp, user, ok := strings.Cut(username, ":")
	if !ok || exp == "" || len(exp) > 12 || user == "" || strings.Contains(user, ":") {
		return time.Time{}, "", ErrNotToken
	}
	var secs int64
	for i := 0; i < len(exp); i++ {
		c := exp[i]
		if c < '0' || c > '9' {
			return time.Time{}, "", ErrNotToken
		}
		secs = secs*10 + int64(c-'0')
	}
	for i := 0; i < len(user); i++ {
		if c := user[i]; c <= ' ' || c == 0x7f {
			return time.Time{}, "", ErrNotToken
		}
	}
	return time.Unix(secs, 0), user, nil
}
