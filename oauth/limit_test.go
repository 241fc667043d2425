package oauth

import (
	"net/http"
	"testing"
	"time"
)

func TestStartLimiter(t *testing.T) {
	var l startLimiter
	now := time.Now()
	a := &http.Request{RemoteAddr: "192.0.2.1:1234"}
	b := &http.Request{RemoteAddr: "192.0.2.2:1234"}
	for i := 0; i < startsPerWindow; i++ {
		if !l.allow(a, now) {
			t.Fatalf("start %d refused", i)
		}
	}
	if l.allow(a, now) {
		t.Fatal("a start over the limit was allowed")
	}
	if !l.allow(b, now) {
		t.Fatal("another address was refused")
	}
	if !l.allow(a, now.Add(startWindow)) {
		t.Fatal("the next window still refuses")
	}
}
