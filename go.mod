module github.com/seed-a6f1faae/eventbus

go 1.25
