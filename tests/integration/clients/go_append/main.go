// Appends with Go's pkg/sftp the way Go programs do: os.O_APPEND, writes
// at the handle's own offset (0 after opening), trusting the server to
// put every write at the end of the file, as OpenSSH's sftp-server does.
//
// The same calls run against flagsync (over SSH, password login) or
// against OpenSSH's sftp-server started as a subprocess (over its stdin
// and stdout), so a test can compare the files they leave.
//
//	go_append ssh HOST PORT USER PASSWORD NAME PART1 PART2 PART3
//	go_append pipe SFTP_SERVER DIR NAME PART1 PART2 PART3
//
// NAME is relative: it lands in the session's start folder. PART1 is
// written to NAME.part (created, truncated); PART2 is appended in two
// writes; PART3 is appended with WriteAt(offset 0); then NAME.part is
// renamed to NAME.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: go_append ssh|pipe ...")
	}
	var client *sftp.Client
	var parts []string
	var name string
	switch os.Args[1] {
	case "ssh":
		if len(os.Args) != 10 {
			fail("usage: go_append ssh HOST PORT USER PASSWORD NAME PART1 PART2 PART3")
		}
		client = overSSH(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
		name, parts = os.Args[6], os.Args[7:10]
	case "pipe":
		if len(os.Args) != 8 {
			fail("usage: go_append pipe SFTP_SERVER DIR NAME PART1 PART2 PART3")
		}
		client = overPipe(os.Args[2], os.Args[3])
		name, parts = os.Args[4], os.Args[5:8]
	default:
		fail("the first argument is ssh or pipe")
	}
	defer client.Close()
	appendInSteps(client, name, readAll(parts))
	fmt.Println("ok")
}

func appendInSteps(c *sftp.Client, name string, parts [][]byte) {
	temp := name + ".part"
	f := open(c, temp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	write(f, parts[0])
	closeFile(f)

	f = open(c, temp, os.O_WRONLY|os.O_APPEND)
	half := len(parts[1]) / 2
	write(f, parts[1][:half])
	write(f, parts[1][half:])
	closeFile(f)

	f = open(c, temp, os.O_WRONLY|os.O_APPEND|os.O_CREATE)
	if _, err := f.WriteAt(parts[2], 0); err != nil {
		fail("WriteAt(0) on an O_APPEND handle: %v", err)
	}
	closeFile(f)

	if err := c.Rename(temp, name); err != nil {
		fail("rename %s to %s: %v", temp, name, err)
	}
}

func overSSH(host, port, user, password string) *sftp.Client {
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
	client, err := sftp.NewClient(conn)
	if err != nil {
		fail("sftp session: %v", err)
	}
	return client
}

func overPipe(server, dir string) *sftp.Client {
	cmd := exec.Command(server, "-e")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		fail("%v", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		fail("%v", err)
	}
	if err := cmd.Start(); err != nil {
		fail("start %s: %v", server, err)
	}
	client, err := sftp.NewClientPipe(out, in)
	if err != nil {
		fail("sftp over a pipe to %s: %v", server, err)
	}
	return client
}

func readAll(paths []string) [][]byte {
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fail("read %s: %v", p, err)
		}
		out = append(out, b)
	}
	return out
}

func open(c *sftp.Client, path string, flags int) *sftp.File {
	f, err := c.OpenFile(path, flags)
	if err != nil {
		fail("open %s: %v", path, err)
	}
	return f
}

func write(f io.Writer, b []byte) {
	if _, err := f.Write(b); err != nil {
		fail("write: %v", err)
	}
}

func closeFile(f *sftp.File) {
	if err := f.Close(); err != nil {
		fail("close: %v", err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go_append: "+format+"\n", args...)
	os.Exit(1)
}
