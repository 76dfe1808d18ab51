package notify_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/batonsd/baton/notify"
)

// A supervisor gives a child its own notification socket and reads what
// the child says, with the sender's pid to check it against.
func ExampleListen() {
	dir, _ := os.MkdirTemp("", "notify-example")
	defer os.RemoveAll(dir)
	sock, err := notify.Listen(filepath.Join(dir, "worker.sock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sock.Close()

	// The child's side (here the same process): NOTIFY_SOCKET names sock.
	c, _ := notify.Open(sock.Addr())
	c.Send("READY=1\nSTATUS=serving")

	d, _ := sock.Read()
	fmt.Println(d.Msg.Is("READY", "1"), d.Msg["STATUS"], d.PID == os.Getpid())
	// Output: true serving true
}

// Parse reads a datagram; a bad line is reported, the good ones kept.
func ExampleParse() {
	m, err := notify.Parse([]byte("READY=1\nnot an assignment\nSTATUS=4/4 ready"))
	fmt.Println(m["READY"], m["STATUS"])
	fmt.Println(err)
	// Output:
	// 1 4/4 ready
	// malformed notify assignment "not an assignment": want KEY=VALUE
}

// Microsecond counts from workers: too large for a duration is "no limit".
func ExampleParseUsec() {
	for _, v := range []string{"2000000", "18446744073709551615"} {
		d, infinite, err := notify.ParseUsec(v)
		fmt.Println(d, infinite, err)
	}
	// Output:
	// 2s false <nil>
	// 0s true <nil>
}
