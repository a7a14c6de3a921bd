// Builds the page into the Python package (gateways/dashboard_dist), which the HTTP gateway
// serves under /dashboard/; relative asset URLs so the page works under any prefix.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: '../gateways/dashboard_dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    sourcemap: false,
    reportCompressedSize: false,
  },
});
