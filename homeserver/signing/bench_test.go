package signing

import "testing"

// benchObject is a typical m.room.message PDU of about 1 KiB, not yet
// canonical, as SignJSON and VerifyJSON meet it.
const benchObject = `{"type":"m.room.message","room_id":"!OGEhHVWSdvArJzumhm:matrix.org","sender":"@alice.wonderland:example.org","content":{"msgtype":"m.text","body":"Hey @bob, the build on main is green again \u2014 see https://ci.example.org/builds/4711 \ud83c\udf89\nThanks for fixing the flaky test!","format":"org.matrix.custom.html","formatted_body":"Hey <a href=\"https://matrix.to/#/@bob:example.org\">bob</a>, the build on <code>main</code> is green again — see <a href=\"https://ci.example.org/builds/4711\">#4711</a> 🎉<br/>Thanks for fixing the <em>flaky</em> test! Grüße, Zoë","m.mentions":{"user_ids":["@bob:example.org"]}},"origin_server_ts":1732262400123,"depth":48213,"prev_events":["$Vk8JV2d2c1LxHSrqVZbOZjE4pm0a1Z6QWB-XcUGA2rU"],"auth_events":["$0rcD4dFFzJNqYbXlTh1sLQCRNJCQaGvvMiJKvykdZEg","$Q3qvjvuuvxD8Td8lVbQj1Y8hn0W7ahWBVDTa4Y_7oP0","$g1yNRDO9jKu2iYW6qAQiWVvp0cWL8EfE0BGnfKAa1mA","$wCD6JHoVG7eKY1WwvJ3aYX1Lx0D0vbyoxq5j5fNsN8Y"],"hashes":{"sha256":"2wqtUq5lE6G52/VmdqWRVJwDEyZgx2k0A7fAOmvqSmM"},"unsigned":{"age_ts":1732262400123,"transaction_id":"m1732262400.17"}}`

func BenchmarkSignJSON(b *testing.B) {
	k := specKey(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SignJSON([]byte(benchObject), specServer, k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyJSON(b *testing.B) {
	k := specKey(b)
	signed, err := SignJSON([]byte(benchObject), specServer, k)
	if err != nil {
		b.Fatal(err)
	}
	pub := k.Public()
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyJSON(signed, specServer, specKeyID, pub); err != nil {
			b.Fatal(err)
		}
	}
}
