// Sends every request an sftp-only server refuses on one session channel
// (Go's x/crypto/ssh lets a client send raw channel requests and does
// not close the channel on a refusal), then starts sftp on that same
// channel and uploads a file. A server that closed the channel, or the
// connection, after a refusal fails here.
//
//	go_refusals HOST PORT USER PASSWORD LOCAL_FILE NAME
//
// Prints one line per request ("exec: refused"), then "ok".
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

type request struct {
	name    string
	payload interface{}
}

func main() {
	if len(os.Args) != 7 {
		fail("usage: go_refusals HOST PORT USER PASSWORD LOCAL_FILE NAME")
	}
	host, port, user, password, local, name := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6]
	config := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.Password(password)},
		// A loopback test server with a fresh host key.
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         20 * time.Second,
	}
	conn, err := ssh.Dial("tcp", net.JoinHostPort(host, port), config)
	if err != nil {
		fail("ssh login: %v", err)
	}
	defer conn.Close()

	forward := struct {
		Address string
		Port    uint32
	}{"127.0.0.1", 0}
	granted, _, err := conn.SendRequest("tcpip-forward", true, ssh.Marshal(&forward))
	expectRefused("tcpip-forward", granted, err)

	channel, requests, err := conn.OpenChannel("session", nil)
	if err != nil {
		fail("open a session channel: %v", err)
	}
	go ssh.DiscardRequests(requests)

	for _, r := range []request{
		{"env", &struct{ Name, Value string }{"LANG", "C"}},
		{"pty-req", &struct {
			Term             string
			Cols, Rows, W, H uint32
			Modes            string
		}{"xterm", 80, 24, 0, 0, ""}},
		{"x11-req", &struct {
			Single           bool
			Protocol, Cookie string
			Screen           uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0}},
		{"auth-agent-req@openssh.com", nil},
		{"exec", &struct{ Command string }{"md5sum"}},
		{"exec", &struct{ Command string }{"df -k ."}},
		{"shell", nil},
		{"subsystem", &struct{ Name string }{"shell"}},
		{"unknown-request@example.com", nil},
	} {
		var payload []byte
		if r.payload != nil {
			payload = ssh.Marshal(r.payload)
		}
		ok, err := channel.SendRequest(r.name, true, payload)
		expectRefused(r.name, ok, err)
	}

	ok, err := channel.SendRequest("subsystem", true, ssh.Marshal(&struct{ Name string }{"sftp"}))
	if err != nil || !ok {
		fail("sftp on the channel of the refused requests: ok=%v err=%v", ok, err)
	}
	client, err := sftp.NewClientPipe(channel, channel)
	if err != nil {
		fail("sftp session: %v", err)
	}
	upload(client, local, name)
	fmt.Println("ok")
}

func expectRefused(name string, granted bool, err error) {
	if err != nil {
		fail("%s: the connection or channel broke: %v", name, err)
	}
	if granted {
		fail("%s: granted by an sftp-only server", name)
	}
	fmt.Printf("%s: refused\n", name)
}

func upload(c *sftp.Client, local, name string) {
	in, err := os.Open(local)
	if err != nil {
		fail("%v", err)
	}
	defer in.Close()
	out, err := c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		fail("open %s: %v", name, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		fail("write %s: %v", name, err)
	}
	if err := out.Close(); err != nil {
		fail("close %s: %v", name, err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go_refusals: "+format+"\n", args...)
	os.Exit(1)
}
