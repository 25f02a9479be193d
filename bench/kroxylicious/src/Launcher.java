// Starts Kroxylicious 0.12.0 from a config file, as its (unpublished) app's main does: parse the YAML with
// ConfigParser, then KafkaProxy(...).startup() and block. Used only by kproxy's side-by-side benchmark.
import io.kroxylicious.proxy.KafkaProxy;
import io.kroxylicious.proxy.config.ConfigParser;
import io.kroxylicious.proxy.config.Configuration;
import io.kroxylicious.proxy.internal.config.Features;
import java.nio.file.Files;
import java.nio.file.Path;

public final class Launcher {
    public static void main(String[] args) throws Exception {
        ConfigParser parser = new ConfigParser();
        Configuration config = parser.parseConfiguration(Files.readString(Path.of(args[0])));
        try (KafkaProxy proxy = new KafkaProxy(parser, config, Features.defaultFeatures())) {
            proxy.startup();
            System.out.println("kroxylicious started");
            System.out.flush();
            proxy.block();
        }
    }
}
