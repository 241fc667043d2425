package federation

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// errPrivateAddress refuses a connection to an address that is not on the
// public internet.
var errPrivateAddress = errors.New("federation: refusing to connect to a non-public address")

// nonPublic are the ranges a remote server name must not lead us to, unless
// private addresses are allowed: otherwise anyone could make Plaza send
// requests into the network it runs in (its database, metadata services,
// admin listeners) by naming a server that resolves there.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast and reserved, up to 255.255.255.255
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// isPublic reports whether addr may be dialled when private addresses are
// not allowed.
func isPublic(addr netip.Addr) bool {
	addr = addr.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	for _, p := range nonPublic {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// newDialer returns the dialer of all outbound federation connections. The
// check runs on the address actually dialled, after DNS resolution, so a
// name cannot resolve its way past it.
func newDialer(allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", errPrivateAddress, address)
			}
			if !isPublic(ap.Addr()) {
				return fmt.Errorf("%w: %s", errPrivateAddress, address)
			}
			return nil
		}
	}
	return d
}
