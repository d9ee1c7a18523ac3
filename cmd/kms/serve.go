package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/config"
	"github.com/attested-kms/attested-kms/server"
)

func newServeCmd() *cobra.Command {
	var cfgPath, logFormat string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the key-release server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
			if logFormat == "text" {
				h = slog.NewTextHandler(os.Stderr, nil)
			}
			log := slog.New(server.WithRequestIDs(h)) // request_id on every line of a request
			ctx := cmd.Context()
			srv, err := server.New(ctx, cfg, log)
			if err != nil {
				return err
			}
			if err := srv.Start(ctx); err != nil {
				srv.Stop()
				return err
			}
			<-ctx.Done()
			log.Info("kms shutting down")
			srv.Stop()
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "config.yaml", "configuration file")
	cmd.Flags().StringVar(&logFormat, "log-format", "json", "log format: json or text")
	return cmd
}

func checkFormat(f string) error {
	switch f {
	case "table", "json":
		return nil
	}
	return fmt.Errorf("-o %q: want table or json", f)
}
