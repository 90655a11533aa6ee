<?php
/*
 * The worker bootstrap of the talk (slide 70) for EmailQueue, without a framework.
 *
 *     php worker.php dispatch URL [LIMIT]        run EmailQueue::dispatch() on /queue/email
 *     php worker.php publish URL JSON [JSON...]  EmailQueue::publish() each JSON object
 *
 * dispatch stops on SIGTERM/SIGINT/SIGHUP, or after LIMIT frames when LIMIT is given. "Sent"
 * e-mails are printed on stdout, one JSON object a line; progress goes to stderr.
 */
declare(strict_types=1);

require __DIR__ . '/queue.php';

if (count($argv) < 3 || !in_array($argv[1], ['dispatch', 'publish'], true)) {
    fwrite(STDERR, "Syntax: worker.php dispatch URL [LIMIT] | worker.php publish URL JSON...\n");
    exit(64);
}
[, $command, $url] = $argv;

try {
    $queue = new EmailQueue(new Stomp($url), '/queue/email');
    if ($command === 'dispatch') {
        fwrite(STDERR, 'Starting worker: EmailQueue as ' . get_current_user() . PHP_EOL);
        $queue->setLimit(isset($argv[3]) ? (int) $argv[3] : null);
        $queue->dispatch();
    } else {
        foreach (array_slice($argv, 3) as $json) {
            if (!$queue->publish(json_decode($json, true, 512, JSON_THROW_ON_ERROR))) {
                throw new RuntimeException("publish failed: $json");
            }
        }
    }
    unset($queue);  // closes the connection (DISCONNECT) before the exit code is decided
} catch (Throwable $e) {
    fwrite(STDERR, get_class($e) . ': ' . $e->getMessage() . PHP_EOL);
    exit(1);
}
