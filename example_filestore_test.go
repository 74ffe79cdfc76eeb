package eventbus_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/seed-a6f1faae/eventbus"
)

// This example appends events to a file store, closes it, and reads them
// back after reopening the directory.
func ExampleOpenFileStore() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "eventbus-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := eventbus.OpenFileStore(dir, nil) // SyncAlways: durable on return
	if err != nil {
		log.Fatal(err)
	}
	_, err = store.Append(ctx, "account-1", eventbus.NoStream,
		eventbus.EventData{ID: eventbus.NewID(), Type: "account.opened", Data: []byte(`{"owner":"ada"}`)},
		eventbus.EventData{ID: eventbus.NewID(), Type: "account.deposited", Data: []byte(`{"amount":100}`)},
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	store, err = eventbus.OpenFileStore(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	for e, err := range store.ReadStream(ctx, "account-1", nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Revision, e.Type, string(e.Data))
	}
	// Output:
	// 0 account.opened {"owner":"ada"}
	// 1 account.deposited {"amount":100}
}
