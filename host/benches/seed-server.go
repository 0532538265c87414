// The seed: the Go tutorial server this project grew from, as the baseline
// the benchmark measures beside the host. Listen on the address given, a
// goroutine per client, read up to 2048 bytes, answer every read with
// "golang socket server : N" (plus a newline, like ours, so the load
// generator can tell replies apart), log what arrived.
package main

import (
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
)

func main() {
	listener, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Println("listen failed:", err)
		os.Exit(1)
	}
	fmt.Println("listening on", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			fmt.Println(conn.RemoteAddr(), "closed:", err)
			return
		}
		fmt.Println(conn.RemoteAddr(), "received:", string(buf[:n]))
		reply := "golang socket server : " + strconv.Itoa(rand.Intn(100)) + "\n"
		if _, err := conn.Write([]byte(reply)); err != nil {
			return
		}
	}
}
