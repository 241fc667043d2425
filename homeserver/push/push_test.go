package push

import "testing"

// TestRefusePrivate: without AllowPrivateAddresses, gateways on the server's
// own networks are out of reach.
func TestRefusePrivate(t *testing.T) {
	for addr, refused := range map[string]bool{
		"127.0.0.1:443": true, "[::1]:443": true, "10.1.2.3:443": true, "192.168.0.1:80": true, "172.16.5.4:443": true,
		"169.254.169.254:80": true, "100.64.0.1:443": true, "0.0.0.0:443": true, "[::ffff:127.0.0.1]:443": true, "[fd00::1]:443": true,
		"8.8.8.8:443": false, "[2001:4860::8888]:443": false,
	} {
		if err := refusePrivate("tcp", addr, nil); (err != nil) != refused {
			t.Errorf("%s: err = %v, want refused %v", addr, err, refused)
		}
	}
}
